"""The package list: the repository root is `mambamixer`, and every package folder below it (a folder with an
__init__.py: kernels/, mixer/, tasks/, conf/ and theirs) installs as `mambamixer.<folder>`, found rather than
listed. This file itself stays out of the wheel. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("mambamixer", "setup")]


found = find_packages(where=str(ROOT), exclude=["tests", "tests.*", "bench", "bench.*", "examples", "examples.*"])
setup(packages=["mambamixer", *(f"mambamixer.{name}" for name in found)], cmdclass={"build_py": BuildPy})
