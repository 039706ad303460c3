// zlib is linked as a system library (see include/CRelayZlib.h).
