"""The package list for setuptools (everything else is in pyproject.toml).

conf/ stays at the top of the repository and ships inside the package as ``hybridsweep.conf``;
each of its folders (config groups) is a package of its own there, found rather than listed, so a
new group ships without a change here.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_GROUPS = [f"hybridsweep.conf.{group}" for group in find_namespace_packages(where="conf")]

setup(
    packages=[*find_packages(include=["hybridsweep", "hybridsweep.*"]), "hybridsweep.conf", *CONFIG_GROUPS],
    package_dir={"hybridsweep.conf": "conf"},
    package_data={"hybridsweep.conf": ["*.yaml"], **{group: ["*.yaml"] for group in CONFIG_GROUPS}},
)
