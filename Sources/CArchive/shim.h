#include <archive.h>
#include <archive_entry.h>

/* The AE_IF* file types are cast macros Swift cannot import. */
static const unsigned int stork_AE_IFREG = AE_IFREG;
static const unsigned int stork_AE_IFDIR = AE_IFDIR;
static const unsigned int stork_AE_IFLNK = AE_IFLNK;
