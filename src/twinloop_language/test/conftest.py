"""A shared embedded parser: the sentence model loads once per session."""

import os

import pytest
from language_scenes import CONFIG

from twinloop_language.parsers import make_parser


@pytest.fixture(scope='session')
def embedded():
    return make_parser(os.path.join(CONFIG, 'language.yaml'), os.path.join(CONFIG, 'waste_categories.yaml'))
