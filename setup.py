"""Only the optional C scanner is declared here; everything else is in pyproject.toml.

optional=True: where no C compiler or Python headers are found, the install goes on
without it and the procfs backend uses its pure-Python scan, with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tamalloc.backends._procscan",
            ["src/tamalloc/backends/_procscan.c"],
            optional=True,
        )
    ]
)
