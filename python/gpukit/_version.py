"""The version of the gpukit package, and the C library it is written for.

The package works only with a libgpukit of exactly this version and this binary interface
(checked when gpukit is imported). CMakeLists.txt, include/gpukit/version.h and this file name the
same version; a test checks that they agree.
"""

__version__ = "0.2.0"

#: GK_ABI_VERSION of the libgpukit this package's struct mirrors were written against.
ABI_VERSION = 1
