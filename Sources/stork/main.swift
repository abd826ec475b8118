print("stork")
