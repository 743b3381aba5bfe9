# Sourced by test.sh (and usable by hand: `source .ci/wine-env.sh`): prepares a Wine prefix
# under target/ in which Windows builds of Peregrine run, and exports what cargo needs to run
# x86_64-pc-windows-gnu test binaries there. Idempotent; installs mingw-w64 and Wine when
# missing (about 15 s and 1.2 GB with Debian's packages).
#
# Exports: WINE (the wine64 binary), WINEPREFIX, WINEDEBUG, WINEDLLOVERRIDES,
# CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER.

WINE=/usr/lib/wine/wine64 # Debian's wine64 is not on PATH
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || [ ! -x "$WINE" ]; then
    echo "wine-env: installing mingw-w64 and wine64"
    _sudo=""
    [ "$(id -u)" -eq 0 ] || _sudo="sudo"
    $_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $_sudo apt-get install -y -qq gcc-mingw-w64-x86-64 wine64 >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu ||
    rustup target add x86_64-pc-windows-gnu

export WINE
export WINEPREFIX="$PWD/target/wine-prefix"
export WINEDEBUG=-all
# Our ProcessPrng shim (see .ci/wine/processprng.c) before anything Wine might bring.
export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree=;mshtml="
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE"

# One wineserver for the whole run, kept alive (-p) so each test binary does not pay for a
# new one. Exit code 2 means one already runs for this prefix: fine.
mkdir -p "$WINEPREFIX"
wineserver -p || [ $? -eq 2 ]
# (A marker of our own: the persistent wineserver writes the registry files only at exit.)
if [ ! -f "$WINEPREFIX/.peregrine-initialised" ]; then
    echo "wine-env: creating the Wine prefix in $WINEPREFIX"
    # Output to /dev/null: Wine's background services keep the pipes open otherwise, which
    # hangs whoever reads them (cargo-nextest does).
    "$WINE" wineboot --init >/dev/null 2>&1 </dev/null
    touch "$WINEPREFIX/.peregrine-initialised"
else
    # Start Wine's services before the first test binary, for the same reason.
    "$WINE" wineboot >/dev/null 2>&1 </dev/null
fi
_shim="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$_shim" ] || [ .ci/wine/processprng.c -nt "$_shim" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 -o "$_shim" .ci/wine/processprng.c -ladvapi32
fi
unset _sudo _shim
