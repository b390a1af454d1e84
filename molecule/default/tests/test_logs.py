"""Log rotation (issue 5): logrotate owns the worker and supervisor logs, rotates
by size, and the workers keep writing to the live file afterwards."""

import re
import time

QUEUE = "/opt/queuefleet/current/bin/queue --env-file /opt/queuefleet/shared/queuefleet.env"
CONF = "/etc/logrotate.d/queuefleet"


def test_logrotate_config_is_valid_and_covers_both_log_dirs(host):
    conf = host.file(CONF)
    assert conf.exists and conf.mode == 0o644
    for expected in ("/var/log/queuefleet/*.log", "/var/log/supervisor/*.log", "size 100M", "rotate 5",
                     "compress", "delaycompress", "kill -USR2"):
        assert expected in conf.content_string
    dry = host.run(f"logrotate -d {CONF}")
    assert dry.rc == 0, dry.stderr
    assert "error" not in (dry.stdout + dry.stderr).lower()


def test_supervisor_rotation_is_off_for_files_logrotate_owns(host):
    for path in host.file("/etc/supervisor/conf.d").listdir():
        if path.startswith("queuefleet-"):
            content = host.file(f"/etc/supervisor/conf.d/{path}").content_string
            assert "stdout_logfile_maxbytes=0" in content and "stderr_logfile_maxbytes=0" in content
    assert "logfile_maxbytes=0" in host.file("/etc/supervisor/supervisord.conf").content_string


def test_timer_runs_hourly(host):
    assert host.service("logrotate.timer").is_enabled
    assert "OnCalendar=hourly" in host.check_output("systemctl cat logrotate.timer")


def slot_00_of_default(host) -> str:
    """The supervisor program of the default pool's first process (queuefleet-default-<generation>_00)."""
    names = re.findall(r"^(queuefleet-default-[0-9a-f]{6}_00)\s+RUNNING", host.run("supervisorctl status").stdout, re.M)
    assert len(names) == 1, names
    return names[0]


def test_forced_rotation_keeps_workers_logging_to_the_live_file(host):
    log = "/var/log/queuefleet/default_00.log"
    program = slot_00_of_default(host)
    pid_before = host.check_output(f"supervisorctl pid {program}")
    assert host.run(f"logrotate -f {CONF}").rc == 0
    assert host.file(f"{log}.1").exists  # renamed (compressed one rotation later)
    marker = f"rotated-{time.time():.0f}"
    for _ in range(4):  # both processes of the pool share the queue: push enough to hit _00
        host.check_output(f"{QUEUE} push queuefleet_demo.jobs:fast --queue default --data '{{\"id\": \"{marker}\"}}'")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if host.file(log).exists and "DONE" in host.file(log).content_string:
            break
        time.sleep(0.5)
    assert "DONE" in host.file(log).content_string, "the worker stopped writing to the live log after rotation"
    # Rotation reopened the files; it did not restart the worker.
    assert host.check_output(f"supervisorctl pid {program}") == pid_before
