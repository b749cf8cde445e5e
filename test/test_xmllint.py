"""package.xml checks (ament_python's test_xmllint, offline).

ament_xmllint validates against the REP-149 schema downloaded from ros.org; here nothing is
downloaded. Instead: ``xmllint --noout`` (well-formedness) when libxml2-utils is installed, the
structure rules of package_format3.xsd checked with xml.etree, and catkin_pkg's own validation
(the parser colcon and rosdep use).
"""

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_XML = os.path.join(ROOT, 'package.xml')

# package_format3.xsd: name, version, description, then people/licence/url elements, then
# dependency elements, then at most one export (each group in this order).
HEAD = ('name', 'version', 'description')
PEOPLE = {'maintainer', 'license', 'url', 'author'}
DEPENDENCIES = {
    'build_depend', 'build_export_depend', 'buildtool_depend', 'buildtool_export_depend',
    'exec_depend', 'depend', 'doc_depend', 'test_depend', 'conflict', 'replace',
    'group_depend', 'member_of_group',
}
VERSION_ATTRIBUTES = {'version_lt', 'version_lte', 'version_eq', 'version_gte', 'version_gt',
                      'condition'}
NAME_PATTERN = re.compile(r'^[a-z][a-z0-9_]*[a-z0-9]$')       # REP-144
VERSION_PATTERN = re.compile(r'^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$')
EMAIL_PATTERN = re.compile(r'^[-a-zA-Z0-9_%+]+(\.[-a-zA-Z0-9_%+]+)*@[-a-zA-Z0-9%]+'
                           r'(\.[-a-zA-Z0-9%]+)*\.[a-zA-Z]{2,}$')


def format3_problems(path):
    """Return the ways ``path`` breaks package_format3.xsd's structure (empty: none)."""
    root = ET.parse(path).getroot()
    problems = []
    if root.tag != 'package' or root.get('format') != '3':
        return [f'root must be <package format="3">, found <{root.tag} {root.attrib}>']
    tags = [child.tag for child in root if isinstance(child.tag, str)]
    if tuple(tags[:3]) != HEAD:
        problems.append(f'first elements must be {HEAD}, found {tuple(tags[:3])}')
    groups = [PEOPLE, DEPENDENCIES, {'export'}]
    group = 0
    for tag in tags[3:]:
        index = next((i for i, g in enumerate(groups) if tag in g), None)
        if index is None:
            problems.append(f'unknown element <{tag}>')
        elif index < group:
            problems.append(f'<{tag}> is out of order (schema order: people, deps, export)')
        else:
            group = index
    for tag in HEAD:
        if tags.count(tag) != 1:
            problems.append(f'<{tag}> must appear exactly once')
    for tag in ('maintainer', 'license'):
        if tag not in tags:
            problems.append(f'at least one <{tag}> is required')
    if tags.count('export') > 1:
        problems.append('<export> may appear at most once')
    name = root.findtext('name', '').strip()
    if not NAME_PATTERN.match(name):
        problems.append(f'package name {name!r} breaks REP-144')
    version = root.findtext('version', '').strip()
    if not VERSION_PATTERN.match(version):
        problems.append(f'version {version!r} is not MAJOR.MINOR.PATCH')
    for person in root.findall('maintainer') + root.findall('author'):
        email = person.get('email')
        if person.tag == 'maintainer' and email is None:
            problems.append('every <maintainer> needs an email attribute')
        if email is not None and not EMAIL_PATTERN.match(email):
            problems.append(f'invalid email {email!r}')
    for child in root:
        if child.tag in DEPENDENCIES:
            if not (child.text or '').strip():
                problems.append(f'empty <{child.tag}>')
            extra = set(child.attrib) - VERSION_ATTRIBUTES
            if extra:
                problems.append(f'<{child.tag}> has unknown attributes {sorted(extra)}')
    return problems


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_is_well_formed():
    """package.xml parses; xmllint agrees when it is installed."""
    ET.parse(PACKAGE_XML)
    with open(PACKAGE_XML, encoding='utf-8') as f:
        text = f.read()
    assert text.startswith('<?xml version="1.0"?>'), 'missing XML declaration'
    assert 'package_format3.xsd' in text, 'missing the format 3 <?xml-model?> schema reference'
    xmllint = shutil.which('xmllint')
    if xmllint:
        proc = subprocess.run([xmllint, '--noout', PACKAGE_XML], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_follows_format3_schema():
    """package.xml follows the structure of package_format3.xsd."""
    assert format3_problems(PACKAGE_XML) == []


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_passes_catkin_pkg_validation():
    """catkin_pkg (used by colcon and rosdep) parses and validates package.xml without warnings."""
    from catkin_pkg.package import parse_package

    warnings = []
    package = parse_package(PACKAGE_XML, warnings=warnings)
    package.validate(warnings=warnings)
    assert warnings == []
    assert package.package_format == 3
    assert package.get_build_type() == 'ament_python'


def test_format3_check_finds_broken_files(tmp_path):
    """The structure check rejects files that break the schema (so it can fail)."""
    good = open(PACKAGE_XML, encoding='utf-8').read()
    broken = {
        'order': good.replace('<name>fmdepth_ros</name>', '').replace(
            '<license>', '<name>fmdepth_ros</name><license>'),
        'format': good.replace('format="3"', 'format="2"'),
        'version': good.replace('<version>0.1.0', '<version>0.1'),
        'unknown': good.replace('<export>', '<exports/><export>'),
    }
    for label, text in broken.items():
        path = tmp_path / f'{label}.xml'
        path.write_text(text, encoding='utf-8')
        assert format3_problems(str(path)), label
