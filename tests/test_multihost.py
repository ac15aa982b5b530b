"""Two CPU processes on 127.0.0.1 (gloo), 4 fake devices each == one process with 8."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import free_port

pytest.importorskip("flax")

WORKER = Path(__file__).with_name("multihost_worker.py")


def test_two_processes_equal_one_process_with_eight_devices(tmp_path):
    port = free_port()
    single = tmp_path / "single.json"
    subprocess.run(
        [sys.executable, str(WORKER), "0", "0", "1", str(single)], check=True, timeout=300
    )
    multi = tmp_path / "multi.json"
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(port), str(i), "2", str(multi)])
        for i in range(2)
    ]
    try:
        for p in procs:
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:
            p.kill()
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert a["stepped"] == b["stepped"]
    np.testing.assert_allclose(b["losses"], a["losses"], atol=1e-5)
