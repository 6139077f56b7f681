"""Regenerates flowgate.v1 from proto/ before every build (see codegen.py)."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import codegen  # noqa: E402


class GenerateThenBuild(build_py):
    def run(self) -> None:
        codegen.generate()
        super().run()


setup(cmdclass={"build_py": GenerateThenBuild})
