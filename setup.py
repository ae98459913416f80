"""Only the optional C modules are declared here; everything else is in pyproject.toml.

optional=True: where no C compiler or Python headers are found, the install goes on
without them. The procfs backend then uses its pure-Python scan, with the same results;
tamalloc.Buffer is then an mmap.mmap, whose address the mmap module chooses, so a huge
buffer is advised for transparent huge pages but not 2 MiB aligned (see buffer.py).
"""

from setuptools import Extension, setup

# Not a directory named _procscan: with the module unbuilt, Python would import that
# directory as an empty namespace package under the module's name.
PROCSCAN = "src/tamalloc/backends/_procscan_c"

setup(
    ext_modules=[
        Extension(
            "tamalloc.backends._procscan",
            [f"{PROCSCAN}/{name}.c" for name in ("module", "scan", "kept", "parse")],
            # The headers: a change to one rebuilds the module, and the sdist has them.
            depends=[f"{PROCSCAN}/{name}.h" for name in ("procscan", "scan", "kept", "parse")],
            optional=True,
        ),
        Extension("tamalloc._mapping", ["src/tamalloc/_mapping.c"], optional=True),
    ]
)
