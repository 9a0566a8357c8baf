import io
import json
import logging

from sdcadm.agent.log import JsonFormatter, Throttled

ME = "11111111-1111-1111-1111-111111111111"


def _logger(stream):
    logger = logging.getLogger("sdcadm.test.agentlog")
    logger.handlers[:] = []
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(ME))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def test_every_record_is_one_json_line_with_the_server():
    stream = io.StringIO()
    log = _logger(stream)
    log.info("started %s", "x", extra={"event": "instance-started", "instance": "u1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed\nover two lines")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = map(json.loads, lines)
    assert first["server_uuid"] == ME and first["msg"] == "started x"
    assert (first["event"], first["instance"], first["level"]) == ("instance-started", "u1", "info")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]
    assert first["time"].endswith("Z")


def test_throttled_logs_start_changes_repeats_and_clear():
    stream = io.StringIO()
    now = [0.0]
    t = Throttled(_logger(stream), every=30, clock=lambda: now[0])
    t.problem("store", "down")
    t.problem("store", "down")           # suppressed
    now[0] = 10
    t.problem("store", "down harder")    # changed: logged
    now[0] = 41
    t.problem("store", "down harder")    # 31 s later: logged again
    t.clear("store", "up")
    t.clear("store", "up")               # only once
    msgs = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
    assert msgs == ["down", "down harder", "down harder", "up"]
