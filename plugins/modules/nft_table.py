#!/usr/bin/python
"""Load one nftables table from its file, atomically, and say whether the live table changed."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nft_table
short_description: Load an nftables table from a file atomically, reporting a change only when the live table changed
description:
  - Loads O(path) with C(nft -f) (one transaction), and compares the live table (C(nft list table)) before and after.
    The decision reads the kernel's ruleset, not whether this run wrote the file, so a table that was flushed or edited
    by hand, or a file written by a run that was interrupted before loading it, is loaded by the next run.
  - The file is expected to replace only its own table (C(table F N {}) then C(delete table F N) then the table),
    so nothing else in the ruleset is touched.
  - Check mode validates the file (C(nft -c -f)) and reports a change when the live table differs from what the
    file would load, as far as the listing can tell (a missing table, say).
version_added: 1.1.0
author: queuefleet (@queuefleet)
options:
  path:
    description: The nft script that (re)creates the table.
    type: path
    required: true
  family:
    description: The table's family.
    type: str
    default: inet
  table:
    description: The table's name.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Load the queuefleet table
  queuefleet.fleet.nft_table:
    path: /etc/queuefleet/firewall.nft
    table: queuefleet
"""

RETURN = r"""
before:
  description: The live table before, as C(nft list table) prints it (empty when it did not exist).
  type: str
  returned: always
after:
  description: The live table after.
  type: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "family": {"type": "str", "default": "inet"},
            "table": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    listing = ["nft", "list", "table", params["family"], params["table"]]

    def live() -> str:
        rc, out, unused_err = module.run_command(listing)
        return out if rc == 0 else ""

    before = live()
    if module.check_mode:
        rc, out, err = module.run_command(["nft", "-c", "-f", params["path"]])
        if rc != 0:
            module.fail_json(msg=f"nft refuses {params['path']}: {(err or out).strip()}")
        module.exit_json(changed=not before, before=before, after=before)
    rc, out, err = module.run_command(["nft", "-f", params["path"]])
    if rc != 0:
        module.fail_json(msg=f"nft could not load {params['path']}: {(err or out).strip()}", before=before)
    after = live()
    module.exit_json(changed=before != after, before=before, after=after)


if __name__ == "__main__":
    main()
