"""node.allocator: a 20 MiB block comes from glibc's heap (reusable) once tuned, from a fresh mmap
without; a user's own allocator settings are left alone. Each case runs in a fresh interpreter."""
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                                reason="glibc only: other C libraries are left alone by design")

PROBE = r"""
import ctypes, sys
from node.allocator import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tune" else None
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
p = libc.malloc(20 << 20)
grew = libc.mallinfo2().hblkhd - before
libc.free(p)
print(tuned, grew >= (20 << 20))
"""


def probe(mode: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("POLCHAIN_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


def test_a_tuned_process_serves_20_mib_from_the_heap():
    assert probe("tune") == "True False"


def test_an_untuned_process_maps_20_mib_afresh():
    assert probe("plain") == "None True"


def test_the_users_settings_win():
    assert probe("tune", POLCHAIN_MALLOC="system") == "False True"
    assert probe("tune", MALLOC_MMAP_THRESHOLD_="1048576") == "False True"
    assert probe("tune", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=1048576") == "False True"
