"""Only the optional C modules are declared here; everything else is in pyproject.toml.

optional=True: where no C compiler or Python headers are found, the install goes on
without them. The procfs backend then uses its pure-Python scan, with the same results;
tamalloc.Buffer is then an mmap.mmap, whose address the mmap module chooses, so a huge
buffer is advised for transparent huge pages but not 2 MiB aligned (see buffer.py).

The bpf backend needs two optional things: the extension ``_bpfiter`` (libbpf-dev) and
the BPF object ``memstats.bpf.o``, which ``clang -target bpf`` compiles here, next to
the extension. Without clang or libbpf either is skipped with a warning and the bpf
backend says, when asked, that it was not built.
"""

import os
import shutil
import subprocess
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Not a directory named _procscan: with the module unbuilt, Python would import that
# directory as an empty namespace package under the module's name.
PROCSCAN = "src/tamalloc/backends/_procscan_c"
BPF = "src/tamalloc/backends/_bpf"
BPF_OBJECT = "memstats.bpf.o"


class BuildExtWithBpf(build_ext):
    """build_ext, then the BPF object next to the extensions (in place for an editable
    install), if clang can."""

    def run(self) -> None:
        super().run()
        self._build_bpf_object()

    def _build_bpf_object(self) -> None:
        clang = shutil.which(os.environ.get("CLANG", "clang"))
        target_dir = os.path.join(
            os.path.dirname(self.get_ext_fullpath("tamalloc.backends._bpfiter")), "_bpf"
        )
        if clang is None:
            print(f"warning: no clang: {BPF_OBJECT} not built, the bpf backend unavailable")
            return
        # Debian keeps <asm/types.h> under the multiarch directory, which clang
        # -target bpf does not search by itself.
        multiarch = sysconfig.get_config_var("MULTIARCH") or ""
        includes = [f"-I/usr/include/{multiarch}"] if multiarch else []
        os.makedirs(target_dir, exist_ok=True)
        command = [
            clang,
            "-O2",
            "-g",  # the BTF that CO-RE relocations need
            "-target",
            "bpf",
            "-Wall",
            *includes,
            "-c",
            f"{BPF}/memstats.bpf.c",
            "-o",
            os.path.join(target_dir, BPF_OBJECT),
        ]
        try:
            subprocess.run(command, check=True)
        except (OSError, subprocess.CalledProcessError) as err:
            print(f"warning: {BPF_OBJECT} not built ({err}): the bpf backend unavailable")


setup(
    cmdclass={"build_ext": BuildExtWithBpf},
    ext_modules=[
        Extension(
            "tamalloc.backends._procscan",
            [f"{PROCSCAN}/{name}.c" for name in ("module", "scan", "kept", "parse")],
            # The headers: a change to one rebuilds the module, and the sdist has them.
            depends=[f"{PROCSCAN}/{name}.h" for name in ("procscan", "scan", "kept", "parse")],
            optional=True,
        ),
        Extension("tamalloc._mapping", ["src/tamalloc/_mapping.c"], optional=True),
        Extension(
            "tamalloc.backends._bpfiter",
            [f"{BPF}/{name}.c" for name in ("bpfiter", "pinned", "decode")],
            depends=[f"{BPF}/memstats.h", f"{BPF}/bpfiter.h"],
            libraries=["bpf"],
            optional=True,
        ),
    ],
)
