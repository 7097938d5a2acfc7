"""ament_python build script for the twinloop_language package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_language'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description=(
        'Instructions in free language to the structured task: the embedded rule parser (not a language model) '
        'and an LLM parser for any OpenAI-compatible endpoint.'
    ),
    license='Apache-2.0',
)
