"""A device's view: the very ``mosquitto_pub``/``mosquitto_sub``/``mosquitto_rr`` lines of
docs/backends/mqtt.md, run against a PyComms worker on the shared broker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from mqtt_support import url_of

import pycomms
from pycomms import Command, Event, Message, Request, Service
from pycomms.testing import Recorder, run_strict, unavailable

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends" / "mqtt.md"


class Reading(Event, name="sensor.reading"):
    device: str
    celsius: float


class SetInterval(Command, name="device.set_interval"):
    device: str
    seconds: int


class Config(Message):
    interval: int


class GetConfig(Request[Config], name="device.get_config"):
    device: str


def doc_line(program: str, containing: str = "") -> str:
    lines = [line for line in DOC.read_text().splitlines() if line.startswith(f"{program} ") and containing in line]
    assert len(lines) == 1, f"expected one {program} line in {DOC.name}, found {len(lines)}"
    return lines[0]


@pytest.fixture(autouse=True)
def _clients() -> None:
    for program in ("mosquitto_pub", "mosquitto_sub", "mosquitto_rr"):
        if shutil.which(program) is None:
            unavailable(f"{program} not found (Debian package mosquitto-clients)")


async def shell(line: str, namespace: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        line,
        env={**os.environ, "NS": namespace},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def fleet(readings: Recorder) -> Service:
    svc = Service("fleet")

    @svc.on
    async def reading(event: Reading) -> None:
        readings.add((event.device, event.celsius))

    @svc.on
    async def config(request: GetConfig) -> Config:
        return Config(interval=30 if request.device == "device-7" else 60)

    return svc


def test_device_publishes_a_reading(namespace: str) -> None:
    async def scenario() -> None:
        readings = Recorder()
        async with pycomms.connect(url_of(namespace), services=[fleet(readings)]):
            proc = await shell(doc_line("mosquitto_pub", "cloudevents+json"), namespace)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err.decode()
            await readings.wait(1, 20)
        readings.assert_exactly_once([("device-7", 21.5)])

    run_strict(scenario, 60)


def test_device_publishes_a_reading_in_binary_mode(namespace: str) -> None:
    async def scenario() -> None:
        readings = Recorder()
        async with pycomms.connect(url_of(namespace), services=[fleet(readings)]):
            proc = await shell(doc_line("mosquitto_pub", "user-property specversion"), namespace)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, err.decode()
            await readings.wait(1, 20)
        readings.assert_exactly_once([("device-7", 22.0)])

    run_strict(scenario, 60)


def test_device_receives_a_command(namespace: str) -> None:
    async def scenario() -> None:
        async with pycomms.connect(url_of(namespace)) as bus:
            proc = await shell(doc_line("mosquitto_sub"), namespace)
            assert proc.stdout is not None
            line = b""
            for _ in range(40):  # mosquitto_sub says nothing when its subscription is in place
                await bus.send(SetInterval(device="device-7", seconds=60))
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), 0.5)
                    break
                except TimeoutError:
                    continue
            await asyncio.wait_for(proc.wait(), 10)
        event = json.loads(line)
        assert (event["type"], event["kind"], event["data"]) == (
            "device.set_interval",
            "command",
            {"device": "device-7", "seconds": 60},
        )

    run_strict(scenario, 60)


def test_device_asks_a_request(namespace: str) -> None:
    async def scenario() -> None:
        async with pycomms.connect(url_of(namespace), services=[fleet(Recorder())]):
            proc = await shell(doc_line("mosquitto_rr"), namespace)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
        reply = json.loads(out)
        assert (reply["kind"], reply["data"]) == ("reply", {"interval": 30})

    run_strict(scenario, 60)
