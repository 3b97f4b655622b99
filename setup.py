"""Builds the optional compiled data path, aiotls._speedups; pyproject.toml says the rest.

Without Cython or a working C compiler, or with AIOTLS_NO_EXTENSIONS=1, the package
installs as pure Python and uses the fallback of the same behaviour (aiotls._openssl.datapath).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("AIOTLS_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("aiotls: Cython is missing; installing without aiotls._speedups")
    else:
        ext_modules = cythonize([Extension("aiotls._speedups", ["aiotls/_speedups.pyx"])])
        for ext in ext_modules:
            # A failed compile (no compiler, no Python headers) skips the extension; set
            # here because cythonize() does not carry the option over.
            ext.optional = True

setup(ext_modules=ext_modules)
