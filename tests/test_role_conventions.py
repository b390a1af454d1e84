"""Conventions every role under roles/ follows (the issue's quality bar).

Run by `make test-roles`. Roles are discovered, so new roles are held to the
same rules: role-prefixed defaults, each with a comment, each declared in
meta/argument_specs.yml with the same default, and templates starting with the
ansible_managed header.
"""

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").exists())


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def defaults(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    return load(path) if path.exists() else {}


def spec_options(role):
    spec = load(ROLES_DIR / role / "meta" / "argument_specs.yml")
    return spec["argument_specs"]["main"].get("options", {})


@pytest.mark.parametrize("role", ROLES)
def test_role_has_standard_files(role):
    for rel in ("tasks/main.yml", "meta/main.yml", "meta/argument_specs.yml"):
        assert (ROLES_DIR / role / rel).exists(), f"{role}: missing {rel}"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_role_prefixed(role):
    for name in defaults(role):
        assert name.startswith(f"{role}_"), f"{role}: default {name} lacks the {role}_ prefix"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_a_comment(role):
    path = ROLES_DIR / role / "defaults" / "main.yml"
    if not path.exists():
        pytest.skip("no defaults")
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith(("#", "---")) and ":" in line:
            previous = lines[i - 1].strip() if i else ""
            assert previous.startswith("#"), f"{role}: {line.split(':')[0]} has no comment above it"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_match_argument_specs(role):
    options = spec_options(role)
    for name, value in defaults(role).items():
        assert name in options, f"{role}: {name} missing from meta/argument_specs.yml"
        templated = isinstance(value, str) and "{{" in value  # resolved at run time; spec may omit it
        # A required option cannot carry a spec default (ansible refuses both);
        # defaults/main.yml may still list it as a documented placeholder.
        if not templated and not options[name].get("required"):
            assert options[name].get("default") == value, f"{role}: {name} default differs from argument_specs"
        assert "type" in options[name], f"{role}: {name} has no type in argument_specs"
    for name, option in options.items():
        if not option.get("required"):
            assert name in defaults(role), f"{role}: optional {name} has no default in defaults/main.yml"


@pytest.mark.parametrize("role", ROLES)
def test_templates_start_with_ansible_managed(role):
    for template in sorted((ROLES_DIR / role / "templates").glob("*.j2")):
        first = template.read_text().splitlines()[0]
        assert first.startswith("{{ ansible_managed | comment"), f"{role}: {template.name} lacks the header"
