#ifndef C_RELAY_ZLIB_H
#define C_RELAY_ZLIB_H

#include <zlib.h>

/// deflateInit2 and inflateInit2 are macros; Swift sees these instead.
static inline int CRelayZlib_deflateInit2(z_streamp stream, int level, int windowBits, int memLevel) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, memLevel, Z_DEFAULT_STRATEGY);
}

static inline int CRelayZlib_inflateInit2(z_streamp stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

#endif
