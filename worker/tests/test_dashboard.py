"""`queue dashboard` as an operator sees it: the real command over a real Redis, a real
failed-jobs table filled by real workers, and the page rendered by a headless Chromium.

Set QUEUEFLEET_SAVE_SCREENSHOT=1 to write the fleet test's screenshot to docs/dashboard.png
(the README's picture); otherwise it goes to the test's tmp_path.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import QUEUE_BIN, TESTS, QueueCli
from servers import free_port, poll, wait_for
from queuefleet import Job, Queue
from queuefleet.failed import FailedJobStore

TOKEN_ENV = "QUEUEFLEET_DASHBOARD_TOKEN"
TOKEN = "s3cret-dashboard-token"
REPO = TESTS.parent.parent
HOST = os.uname().nodename


# -- helpers: the dashboard process, HTTP, Chromium, the rendered DOM ------------------------------


class Dashboard:
    """A real `queue dashboard` subprocess on a free port (loopback unless `listen` says otherwise)."""

    def __init__(self, cli: QueueCli, token: str | None, env: dict[str, str] | None = None, listen: str = "127.0.0.1",
                 args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {**cli.env, **(env or {})}
        full.pop(TOKEN_ENV, None)
        if token is not None:
            full[TOKEN_ENV] = token
        self.out, self.err = cli.workdir / f"dashboard-{self.port}.out", cli.workdir / f"dashboard-{self.port}.err"
        self.proc = subprocess.Popen([QUEUE_BIN, "dashboard", "--listen", f"{listen}:{self.port}", *args], env=full,
                                     cwd=cli.workdir, stdout=open(self.out, "w"), stderr=open(self.err, "w"))
        wait_for(self._listening, timeout=30, what="the dashboard to listen")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"queue dashboard exited {self.proc.returncode}:\n{self.output()}\n{self.errors()}")
        return poll(lambda: self.request("GET", "/healthz")[0], timeout=0.2) is not None

    def request(self, method: str, path: str, form: dict[str, str] | None = None, *, cookie: str = "",
                headers: dict[str, str] | None = None, address: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(address, self.port, timeout=30)
        try:
            body = urlencode(form) if form is not None else None
            sent = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
            if cookie:
                sent["Cookie"] = cookie
            conn.request(method, path, body=body, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            conn.close()

    def login(self, token: str = TOKEN) -> str:
        """POST the token to /login as the login form does; the session cookie to send back."""
        code, headers, _ = self.request("POST", "/login", {"token": token})
        assert code == 303 and headers["Location"] == "/", (code, headers)
        return headers["Set-Cookie"].split(";", 1)[0]

    def output(self) -> str:
        return self.out.read_text()

    def errors(self) -> str:
        return self.err.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def dashboards():
    started: list[Dashboard] = []

    def start(cli: QueueCli, token: str | None, **kwargs) -> Dashboard:
        started.append(Dashboard(cli, token, **kwargs))
        return started[-1]

    yield start
    for d in started:
        d.close()


@pytest.fixture(scope="session")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium binary found: run `make setup` (installs Debian's chromium package)")


def browse(chromium: str, tmp_path: Path, url: str, *args: str) -> str:
    """Load `url` in headless Chromium with `args` (--dump-dom prints the rendered DOM)."""
    result = subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def dom(chromium: str, tmp_path: Path, url: str) -> "Page":
    return Page(browse(chromium, tmp_path, url, "--dump-dom"))


def screenshot(chromium: str, tmp_path: Path, url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    browse(chromium, tmp_path, url, f"--screenshot={path}", "--window-size=1280,1400", "--hide-scrollbars")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


class Page(HTMLParser):
    """What a person sees in the rendered DOM: text per section, table rows, forms and buttons."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.texts: dict[str, list[str]] = {"page": []}
        self.rows: dict[str, list[list[str]]] = {}
        self.forms: list[dict] = []
        self.buttons: list[str] = []
        self._section = ""
        self._cell: list[str] | None = None
        self._in = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id", "")
            self.texts[self._section], self.rows[self._section] = [], []
        elif tag == "tr":
            self.rows.setdefault(self._section, []).append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "inputs": {}})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"][a.get("name", "")] = a.get("value", "")
        elif tag in ("button", "style", "title", "script"):
            self._in = tag
            if tag == "button":
                self.buttons.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = ""
        elif tag in ("td", "th") and self._cell is not None:
            self.rows[self._section][-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == self._in:
            self._in = ""

    def handle_data(self, data: str) -> None:
        if self._in in ("style", "title", "script"):
            return
        if self._in == "button":
            self.buttons[-1] += data.strip()
        self.texts["page"].append(data)
        if self._section:
            self.texts[self._section].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, section: str = "page") -> str:
        return " ".join(" ".join(self.texts.get(section, [])).split())

    def row(self, section: str, first: str) -> list[str]:
        """The table row of `section` whose first cell is `first`."""
        found = [r for r in self.rows.get(section, []) if r and r[0] == first]
        assert len(found) == 1, (section, first, self.rows.get(section))
        return found[0]

    def posts(self) -> list[dict]:
        return [f for f in self.forms if f["method"].lower() == "post"]


def failed_rows(cli: QueueCli) -> list[dict]:
    return json.loads(cli.run("failed", "--json").stdout)


def status(cli: QueueCli, *args: str) -> dict:
    return json.loads(cli.run("status", "--json", *args).stdout)


def ready(cli: QueueCli, queue: str) -> int:
    return status(cli, "--queue", queue)["queues"][queue]["ready"]


def run_batch(cli: QueueCli, queues: str, done: int, failures: list[tuple[str, dict]]) -> None:
    """Jobs that succeed and jobs that fail for good (tries 1), run by a real worker until empty."""
    q = Queue.from_url(cli.env["QUEUEFLEET_REDIS_URL"])
    first = queues.split(",")[0]
    q.push_many([("qf_testjobs:record", {"tag": f"ok-{i}"}) for i in range(done)], queue=first)
    for job, data in failures:
        q.push(job, data, queue=first)
    cli.run("work", "--queue", queues, "--name", "batch", "--stop-when-empty", "--sleep", "0.1")
    assert len(failed_rows(cli)) == len(failures)


def live_pool(cli: QueueCli, name: str, queues: str, processes: int) -> list[int]:
    pids = [cli.spawn("--queue", queues, "--name", name, "--release", "2024.06.1", "--sleep", "0.5", "--timeout", "300").pid
            for _ in range(processes)]
    wait_for(lambda: {int(w["pid"]) for w in status(cli)["workers"]} >= set(pids), timeout=30,
             what=f"pool {name}'s heartbeats")
    return pids


# -- the page ------------------------------------------------------------------------------------------


def test_fleet_page_in_chromium_read_only(cli, r, chromium, dashboards, tmp_path):
    run_batch(cli, "mail,reports", done=12, failures=[
        ("qf_testjobs:fail", {"tag": "invoice-1042"}),
        ("qf_testjobs:with_context", {"tag": "r7", "action": "fail", "reason": "no recipient for report 7"}),
        ("qf_testjobs:quiet_fail", {"tag": "x"}),
    ])
    q = Queue.from_url(cli.env["QUEUEFLEET_REDIS_URL"])
    q.push_many([("qf_testjobs:record", {"tag": f"e{i}"}) for i in range(5)], queue="exports")  # no worker reads it
    q.push("qf_testjobs:record", {"tag": "later"}, queue="exports", delay=600)
    q.push("qf_testjobs:record", {"tag": "later2"}, queue="exports", delay=900)
    mailers = live_pool(cli, "mailers", "mail,default", 2)
    q.push("qf_testjobs:slow", {"tag": "nightly", "seconds": 120}, queue="reports")
    [reporter] = live_pool(cli, "reports", "reports", 1)
    wait_for(lambda: any(w["state"] == "busy" for w in status(cli)["workers"]), timeout=30, what="the busy worker")
    [boom] = [f for f in failed_rows(cli) if "invoice-1042" in f["exception"]]

    d = dashboards(cli, token=None)
    assert d.output().strip() == f"dashboard on http://127.0.0.1:{d.port}/ (read-only)"
    page = dom(chromium, tmp_path, d.url + "/")

    # hosts, pools and processes: grouped by host then pool, with counts and states
    workers = page.text("workers")
    assert "3 processes in 2 pools on 1 host" in workers, workers
    assert f"{HOST} / mailers · 2 processes (2 idle)" in workers, workers
    assert f"{HOST} / reports · 1 process (1 busy)" in workers, workers
    for pid in mailers:
        assert page.row("workers", str(pid))[2] == "idle"
    busy = page.row("workers", str(reporter))
    assert busy[1:5] == ["2024.06.1", "busy", "qf_testjobs:slow", "reports"], busy

    # queues with their numbers and the age of the oldest ready job
    exports = page.row("queues", "exports")
    assert exports[1:4] == ["5", "2", "0"] and re.fullmatch(r"\d+s", exports[4]), exports
    assert page.row("queues", "reports")[1:5] == ["0", "0", "1", "-"]
    assert page.row("queues", "mail")[1:4] == ["0", "0", "0"]

    # throughput: the batch's outcomes, counted once
    assert "done 12 failed 3" in page.text("throughput"), page.text("throughput")
    assert "<svg" in page.html and page.html.count("<rect") == 2 * 60

    # failed jobs: id, job and reason; read-only, so no buttons and no forms
    row = page.row("failed", str(boom["id"]))
    assert row[1:3] == ["mail", "qf_testjobs:fail"] and row[4] == "RuntimeError: failing on purpose: invoice-1042", row
    assert "FailJob: no recipient for report 7" in page.text("failed")
    assert "3 in all" in page.text("failed")
    assert "read-only" in page.text()
    assert page.buttons == [] and page.posts() == []
    assert "Retry" not in page.html and "Forget" not in page.html

    # a POST is refused and changes nothing
    for action in ("retry", "forget"):
        code, _, body = d.request("POST", f"/failed/{boom['id']}/{action}", {"token": "guess"})
        assert code == 403 and "read-only" in body
    assert len(failed_rows(cli)) == 3
    assert ready(cli, "mail") == 0

    save = os.environ.get("QUEUEFLEET_SAVE_SCREENSHOT") == "1"
    screenshot(chromium, tmp_path, d.url + "/", REPO / "docs" / "dashboard.png" if save else tmp_path / "dashboard.png")


def test_retry_and_forget_after_logging_in_with_the_token(cli, chromium, dashboards, tmp_path):
    run_batch(cli, "mail", done=2, failures=[("qf_testjobs:fail", {"tag": "again"}), ("qf_testjobs:fail", {"tag": "drop"})])
    rows = {("again" if "again" in f["exception"] else "drop"): f for f in failed_rows(cli)}
    d = dashboards(cli, token=TOKEN)
    assert "(retry and forget allowed after logging in with the token)" in d.output()

    # not logged in: read-only, with a link to the login form
    page = dom(chromium, tmp_path, f"{d.url}/")
    assert page.buttons == [] and page.posts() == []
    assert "log in to retry or forget" in page.text() and str(rows["again"]["id"]) in page.text("failed")
    login = dom(chromium, tmp_path, f"{d.url}/login")
    assert 'http-equiv="refresh"' not in login.html
    assert login.posts() == [{"action": "/login", "method": "post", "inputs": {"token": ""}}]

    # a wrong token: refused, no session
    code, headers, body = d.request("POST", "/login", {"token": TOKEN + "x"})
    assert code == 403 and "Wrong token." in body and "Set-Cookie" not in headers
    cookie = d.login()

    # logged in: a Retry and a Forget form per row, carrying nothing but the session cookie
    code, _, html = d.request("GET", "/", cookie=cookie)
    page = Page(html)
    assert 'http-equiv="refresh" content="5"' in page.html
    forms = {f["action"]: f["inputs"] for f in page.posts()}
    assert set(forms) == {f"/failed/{row['id']}/{action}" for row in rows.values() for action in ("retry", "forget")} | {"/logout"}
    assert all(inputs == {} for inputs in forms.values())
    assert page.buttons.count("Retry") == 2 and page.buttons.count("Forget") == 2

    retry, forget = f"/failed/{rows['again']['id']}/retry", f"/failed/{rows['drop']['id']}/forget"
    # without a session, with a forged one, or from another site's form: refused, nothing changes
    for path in (retry, forget):
        assert d.request("POST", path, {"token": TOKEN})[0] == 403
        assert d.request("POST", path, cookie=cookie[:-2] + "00")[0] == 403
        assert d.request("POST", path, cookie=cookie, headers={"Origin": "http://evil.example"})[0] == 403
    assert len(failed_rows(cli)) == 2 and ready(cli, "mail") == 0

    # retry: the job is back on its queue, its row gone; then back to the page
    code, headers, _ = d.request("POST", retry, cookie=cookie, headers={"Origin": d.url})
    assert code == 303 and headers["Location"] == "/"
    assert [f["id"] for f in failed_rows(cli)] == [rows["drop"]["id"]]
    assert ready(cli, "mail") == 1
    r = Queue.from_url(cli.env["QUEUEFLEET_REDIS_URL"]).redis
    [pushed] = r.lrange("queuefleet:queue:mail", 0, -1)
    job = Job.decode(r.hget("queuefleet:payloads", pushed))
    assert (job.job, job.data, job.attempts) == ("qf_testjobs:fail", {"tag": "again"}, 0)

    # forget: the row is gone, nothing is pushed
    code, headers, _ = d.request("POST", forget, cookie=cookie)
    assert code == 303 and headers["Location"] == "/"
    assert failed_rows(cli) == [] and ready(cli, "mail") == 1
    assert d.request("POST", forget, cookie=cookie)[0] == 404
    assert "No failed jobs." in Page(d.request("GET", "/", cookie=cookie)[2]).text("failed")
    assert f"dashboard: retried {rows['again']['id']} ({rows['again']['uuid']}) as {job.id} on queue mail" in d.output()
    assert f"dashboard: forgot {rows['drop']['id']}" in d.output()

    # log out: the cookie is cleared
    code, headers, _ = d.request("POST", "/logout", cookie=cookie)
    assert code == 303 and "Max-Age=0" in headers["Set-Cookie"]
    assert TOKEN not in d.output() + d.errors()


def test_the_token_is_never_in_a_url_a_redirect_or_the_page(bare_cli, dashboards):
    """The token is posted once to /login and turns into an HttpOnly, SameSite=Strict session
    cookie: a token in a URL (history, logs, the refresh) unlocks nothing (issue 25)."""
    FailedJobStore(bare_cli.env["QUEUEFLEET_DATABASE_URL"]).migrate()
    FailedJobStore(bare_cli.env["QUEUEFLEET_DATABASE_URL"]).record(
        uuid="t1", connection="redis", queue="mail", payload=Job.new("qf_testjobs:fail", {}, "mail").encode(), exception="E")
    d = dashboards(bare_cli, token=TOKEN)
    code, _, html = d.request("GET", f"/?token={TOKEN}")
    assert code == 200 and Page(html).posts() == [] and TOKEN not in html
    code, headers, _ = d.request("POST", "/login", {"token": TOKEN})
    assert code == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = cookie.split(";", 1)[0]
    html = d.request("GET", "/", cookie=session)[2]
    assert Page(html).posts() and TOKEN not in html and '<meta http-equiv="refresh" content="5">' in html
    code, headers, _ = d.request("POST", "/failed/1/retry", cookie=session)
    assert code == 303 and headers["Location"] == "/"


def test_a_non_loopback_listen_needs_an_allow_list(bare_cli, dashboards):
    """As for the exporter: beyond loopback the dashboard must be told who may connect (issue 25)."""
    try:
        result = bare_cli.run("dashboard", "--listen", f"0.0.0.0:{free_port()}", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("it served on every address without an allow-list")
    assert result.returncode == 2 and "name who may connect with --allow" in result.stderr
    assert bare_cli.run("dashboard", "--allow", "10.0.0.0/33", check=False, timeout=20).returncode == 2
    d = dashboards(bare_cli, token=None, listen="0.0.0.0", args=("--allow", "198.51.100.0/24"))
    assert d.request("GET", "/healthz")[0] == 200  # loopback may always connect
    outside = own_non_loopback_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    code, _, body = d.request("GET", "/", address=outside)
    assert code == 403 and "not in the dashboard's --allow list" in body


def own_non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (a UDP connect sends nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_a_host_header_that_does_not_name_the_dashboard_is_refused(bare_cli, dashboards):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 reaches the
    dashboard with `Host: evil.example`. Only IP addresses, localhost and --allow-host names pass (issue 25)."""
    d = dashboards(bare_cli, token=TOKEN)
    for host in ("evil.example", f"evil.example:{d.port}", "127.0.0.1.evil.example", f"queue-admin.internal:{d.port}"):
        code, _, body = d.request("GET", "/api/overview", headers={"Host": host})
        assert code == 403 and "is not this dashboard's address" in body, host
        assert d.request("POST", "/login", {"token": TOKEN}, headers={"Host": host})[0] == 403
    for host in (f"127.0.0.1:{d.port}", f"localhost:{d.port}", f"[::1]:{d.port}"):
        assert d.request("GET", "/healthz", headers={"Host": host})[0] == 200, host
    named = dashboards(bare_cli, token=None, args=("--allow-host", "queue-admin.internal"))
    assert named.request("GET", "/healthz", headers={"Host": f"QUEUE-ADMIN.internal:{named.port}"})[0] == 200
    assert named.request("GET", "/healthz", headers={"Host": "evil.example"})[0] == 403


# -- outages ---------------------------------------------------------------------------------------------


def test_redis_down_healthz_503_and_the_page_still_renders(own_redis, sqlite_url, tmp_path, chromium, dashboards):
    cli = QueueCli(own_redis.url, sqlite_url, tmp_path)
    cli.run("migrate")
    FailedJobStore(sqlite_url).record(uuid="lost-1", connection="redis", queue="mail",
                                      payload=Job.new("qf_testjobs:fail", {"tag": "z"}, "mail").encode(),
                                      exception="Traceback ...\nRuntimeError: smtp said no")
    d = dashboards(cli, token=TOKEN)
    assert d.request("GET", "/healthz")[:3:2] == (200, "ok\n")

    own_redis.stop()
    code, _, body = d.request("GET", "/healthz")
    assert code == 503 and body.startswith("Redis unreachable:") and own_redis.url in body
    page = dom(chromium, tmp_path, d.url + "/")
    assert f"Redis unreachable: {own_redis.url}:" in page.text()
    assert "No live workers." in page.text("workers") and "No queues." in page.text("queues")
    assert "RuntimeError: smtp said no" in page.row("failed", "1")[4]
    doc = json.loads(d.request("GET", "/api/overview")[2])
    assert doc["errors"]["redis"].startswith("Redis unreachable") and doc["failed_total"] == 1
    # retrying needs Redis: refused, and the row stays
    assert d.request("POST", "/failed/1/retry", cookie=d.login())[0] == 503
    assert len(failed_rows(cli)) == 1

    own_redis.start()
    wait_for(lambda: d.request("GET", "/healthz")[0] == 200, timeout=20, what="/healthz after Redis came back")
    assert "Redis unreachable" not in d.request("GET", "/")[2]


def test_database_down_shows_a_banner_and_the_queues(bare_cli, dashboards):
    Queue.from_url(bare_cli.env["QUEUEFLEET_REDIS_URL"]).push("qf_testjobs:record", {"tag": 1}, queue="mail")
    url = f"mysql+pymysql://qf:pw-not-shown@127.0.0.1:{free_port()}/queuefleet"
    d = dashboards(bare_cli, token=None, env={"QUEUEFLEET_DATABASE_URL": url})
    code, _, html = d.request("GET", "/")
    page = Page(html)
    assert code == 200 and "failed-jobs database unreachable:" in page.text()
    assert "pw-not-shown" not in html
    assert page.row("queues", "mail")[1:4] == ["1", "0", "0"]
    assert d.request("GET", "/healthz")[0] == 200  # Redis answers



def test_autoscaled_pools_and_the_scale_history(cli, r, dashboards):
    """Issue 26: per autoscaled pool its min, desired, running and max on each host (and summed over
    its live hosts), a stale announcement greyed out of the sums, the last scale events newest first;
    nothing of it on a fleet where no pool autoscales."""
    from queuefleet.autoscale_policy import ScaleRule
    from scaling import autoscaler

    d = dashboards(cli, token=None)
    page = Page(d.request("GET", "/")[2])
    assert "autoscale" not in page.rows and "scale-history" not in page.rows
    assert "Autoscaled" not in page.text() and "Scale history" not in page.text()

    Queue.from_url(cli.env["QUEUEFLEET_REDIS_URL"]).push_many(
        [("qf_testjobs:record", {"tag": f"x{i}"}) for i in range(10)], queue="exports")
    rule = ScaleRule(min=1, max=3, step=2, cooldown=0, target_wait=1)
    here, _ = autoscaler(r, HOST, "exports", ["exports"], rule)
    there, _ = autoscaler(r, "w2", "exports", ["exports"], rule)
    here.tick(now=0)
    there.tick(now=0)
    cli.run("work", "--queue", "exports", "--name", "drain", "--stop-when-empty", "--sleep", "0.1")
    assert any("3 -> 1 (scale down" in line for line in here.tick(now=1))
    # w3 ran `nightly` until its autoscaler stopped five minutes ago; only the counts name the pool now.
    seconds, _micros = r.time()
    r.hset("queuefleet:autoscale:nightly", "w3", json.dumps({"min": 0, "max": 4, "running": 2, "desired": 2,
                                                            "at": seconds - 300}))
    r.hset("queuefleet:autoscale:counts", "nightly|w3|up", 1)

    page = Page(d.request("GET", "/")[2])
    assert "1 pool on 2 hosts" in page.text("autoscale"), page.text("autoscale")
    rows = {(row[0], row[1]): row[2:] for row in page.rows["autoscale"][1:]}
    assert rows[("exports", HOST)][:4] == ["1", "1", "3", "3"]  # it counted 3 running, decided on 1
    assert rows[("exports", "w2")][:4] == ["1", "3", "1", "3"]
    assert rows[("exports", "all 2 hosts")][:4] == ["2", "4", "4", "6"]
    assert re.fullmatch(r"\d+s ago", rows[("exports", HOST)][4]), rows
    assert rows[("nightly", "w3")] == ["0", "2", "2", "4", "5m ago (stale: its autoscaler stopped?)"]
    assert 'class="stale"' in page.html and ("nightly", "all 1 hosts") not in rows

    history = page.rows["scale-history"]
    assert history[0] == ["time", "host", "pool", "change", "fleet wanted", "reason"]
    assert [row[1:4] + [row[5]] for row in history[1:]] == [
        [HOST, "exports", "3 → 1", "scale down (wanted fewer for 0s)"], ["w2", "exports", "1 → 3", "scale up"],
        [HOST, "exports", "1 → 3", "scale up"]]
    assert re.fullmatch(r"\d\d:\d\d:\d\d \(\d+s ago\)", history[1][0]), history[1]
    assert "last 3 changes" in page.text("scale-history")
    doc = json.loads(d.request("GET", "/api/overview")[2])
    assert [(e["from"], e["to"]) for e in doc["autoscale"]["events"]] == [(3, 1), (1, 3), (1, 3)]
    assert {(s["pool"], s["host"], s["live"]) for s in doc["autoscale"]["pools"]} == {
        ("exports", HOST, True), ("exports", "w2", True), ("nightly", "w3", False)}

# -- HTTP and the command line ------------------------------------------------------------------------------


def test_routes_methods_json_and_headers(bare_cli, dashboards):
    d = dashboards(bare_cli, token=None)
    assert d.request("GET", "/nope")[0] == 404
    assert d.request("GET", "/failed/1")[0] == 404
    assert d.request("PUT", "/")[0] == 405 and d.request("DELETE", "/failed/1/forget")[0] == 405
    code, headers, _ = d.request("GET", "/failed/1/retry")
    assert code == 405 and headers["Allow"] == "POST"
    assert d.request("POST", "/")[0] == 405
    code, headers, body = d.request("GET", "/api/overview")
    doc = json.loads(body)
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert {"workers", "pools", "queues", "throughput", "failed_jobs", "errors", "read_only"} <= doc.keys()
    assert doc["read_only"] is True and len(doc["throughput"]["minutes"]) == 60
    code, headers, _ = d.request("GET", "/")
    assert code == 200 and headers["X-Frame-Options"] == "DENY" and "default-src 'none'" in headers["Content-Security-Policy"]


def test_escapes_what_it_shows(bare_cli, dashboards):
    """Queue names are restricted, but job names in failed payloads and errors are anything."""
    FailedJobStore(bare_cli.env["QUEUEFLEET_DATABASE_URL"]).migrate()
    FailedJobStore(bare_cli.env["QUEUEFLEET_DATABASE_URL"]).record(
        uuid="x1", connection="redis", queue="mail", payload=json.dumps({"job": "<b>bold</b>"}),
        exception="ValueError: <script>alert(1)</script>")
    d = dashboards(bare_cli, token=None)
    html = d.request("GET", "/")[2]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


@pytest.mark.parametrize("value", ["9819", "localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", ":9819"])
def test_bad_listen_is_a_usage_error(bare_cli, value):
    result = bare_cli.run("dashboard", "--listen", value, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"Invalid value for '--listen': expected HOST:PORT (like 127.0.0.1:9819), got {value!r}" in result.stderr


def test_port_in_use_is_one_line(bare_cli, dashboards):
    d = dashboards(bare_cli, token=None)
    result = bare_cli.run("dashboard", "--listen", f"127.0.0.1:{d.port}", check=False, timeout=30)
    assert result.returncode == 1 and result.stderr.strip() == f"queue: cannot listen on 127.0.0.1:{d.port}: Address already in use"


@pytest.fixture
def bare_cli(redis_url, sqlite_url, tmp_path):
    c = QueueCli(redis_url, sqlite_url, tmp_path)
    yield c
    c.close()
