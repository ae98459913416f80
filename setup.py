"""Only the optional C modules are declared here; everything else is in pyproject.toml.

optional=True: where no C compiler or Python headers are found, the install goes on
without them. The procfs backend then uses its pure-Python scan, with the same results;
tamalloc.Buffer is then an mmap.mmap, whose address the mmap module chooses, so a huge
buffer is advised for transparent huge pages but not 2 MiB aligned (see buffer.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tamalloc.backends._procscan",
            ["src/tamalloc/backends/_procscan.c"],
            optional=True,
        ),
        Extension("tamalloc._mapping", ["src/tamalloc/_mapping.c"], optional=True),
    ]
)
