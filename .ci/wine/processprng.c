/*
 * bcryptprimitives.dll for the Wine prefix the tests run in: exports ProcessPrng only.
 *
 * Why it exists: Rust's standard library (1.78 and later) draws randomness on Windows from
 * ProcessPrng in bcryptprimitives.dll. Wine 8.0 (Debian's wine64) has no such DLL, so every
 * Rust .exe fails to load under it: exit code 53 and no output at all. This shim implements
 * ProcessPrng on top of RtlGenRandom (advapi32's SystemFunction036), which Wine does have.
 * It is built with mingw by .ci/wine-env.sh and copied into the prefix's system32; nothing
 * else uses it, and real Windows (10 and later) ships its own bcryptprimitives.dll.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a ULONG length; ProcessPrng a SIZE_T. */
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
