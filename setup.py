"""The wheel carries the configs: conf/ and experiments/ stay at the top of the repository (conf/experiment links to
experiments/), and the build copies them into the package as emotion_lightning/conf/, where an installed copy reads
them (emotion_lightning/training/resolvers.py: config_dir). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads conf/ from the checkout itself
            target = Path(self.build_lib) / "emotion_lightning" / "conf"
            shutil.rmtree(target, ignore_errors=True)
            # Links are followed: conf/experiment/ becomes a copy of experiments/.
            shutil.copytree(Path(__file__).parent / "conf", target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
