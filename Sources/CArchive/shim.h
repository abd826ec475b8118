#include <archive.h>
#include <archive_entry.h>

/* AE_IFREG is a cast macro Swift cannot import. */
static const unsigned int stork_AE_IFREG = AE_IFREG;
