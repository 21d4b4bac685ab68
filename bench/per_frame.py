"""The per-frame design, measured: frames handed between stages through S3, one orchestration
call per frame (the design avmon replaces; DESIGN.md §1, §9).

Both variants decode the first ``frames`` pictures of a clip with the session's settings and feed
every detector, exactly as the session does. In memory (avmon), the detector stage gets the
decoder's luma view and the audio blocks directly. Per frame, the decode stage serialises each
picture's luma plane and the audio decoded since the previous picture into one object, puts it in
S3 (the emulator's), and starts one Step Functions execution for it (the orchestration call: a
state machine of two states, *Detect* and *Record*, i.e. two billed state transitions per
frame); the detector stage gets the object back, rebuilds the frame and the audio blocks, and
deletes the object. Every request is counted by the SDK's ``before-send`` event (retries
included).

Measured: this process's CPU time per frame (decode, serialisation, SDK calls, detectors; the
emulator's own work is AWS's side, billed per request), and AWS requests per frame.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import numpy.typing as npt
from botocore.config import Config

from bench.clips import Clip, reader
from bench.timing import paired
from infra import local
from worker.decoded import ANALYSIS_RATE
from worker.detectors import AudioBlock, StreamContext, VideoFrame, build_detectors
from worker.dispatch import Dispatcher

MEMORY, HANDOFF = "in memory", "through S3"
STATES = ("Detect", "Record")  # the state machine: one transition each per execution
_HEAD = struct.Struct("<dIIIB")  # t, height, width, audio samples, full_range


@dataclass
class PerFrame:
    clip: Clip
    frames: int
    memory_cpu_s: float  # median, for ``frames`` pictures
    memory_wall_s: float
    handoff_cpu_s: float
    handoff_wall_s: float
    calls: Counter[str]  # over one handoff run
    cpu_ratio: float  # handoff ÷ in memory, CPU, median over the rounds

    @property
    def calls_per_frame(self) -> float:
        return sum(self.calls.values()) / self.frames

    @property
    def memory_cpu_ms_per_frame(self) -> float:
        return self.memory_cpu_s / self.frames * 1e3

    @property
    def handoff_cpu_ms_per_frame(self) -> float:
        return self.handoff_cpu_s / self.frames * 1e3

    @property
    def transitions_per_frame(self) -> float:
        return len(STATES) * self.calls["states:StartExecution"] / self.frames


class Handoff:
    """The per-frame stages' AWS side: a bucket and a state machine on the emulator."""

    def __init__(self, endpoint: str) -> None:
        kwargs: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "config": Config(retries={"mode": "standard", "max_attempts": 3}),
        }
        self.s3 = boto3.client("s3", **kwargs)
        self.sfn = boto3.client("stepfunctions", **kwargs)
        # Every HTTP request sent (retries included), counted by the SDK itself: a counting proxy
        # in this process would add its own CPU to the design's.
        self.calls: Counter[str] = Counter()
        for client in (self.s3, self.sfn):
            client.meta.events.register("before-send", self._count)
        self.run = f"r{os.getpid()}-{time.monotonic_ns()}"
        self.bucket = f"avmon-bench-{self.run}"
        self.s3.create_bucket(Bucket=self.bucket)
        states: dict[str, Any] = {
            name: {"Type": "Pass", **({"Next": STATES[i + 1]} if i + 1 < len(STATES) else {"End": True})}
            for i, name in enumerate(STATES)
        }
        self.machine = self.sfn.create_state_machine(
            name=f"avmon-per-frame-{self.run}",
            definition=json.dumps({"StartAt": STATES[0], "States": states}),
            roleArn="arn:aws:iam::123456789012:role/avmon-bench",
        )["stateMachineArn"]

    def _count(self, event_name: str, **kwargs: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.calls[f"{'states' if service == 'sfn' else service}:{operation}"] += 1

    def close(self) -> None:
        self.s3.close()
        self.sfn.close()

    def send(self, index: int, body: bytes) -> bytes:
        """Decode stage → S3 + orchestration → detector stage; returns what the detector stage read."""
        key = f"{self.run}/{index:07d}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        self.sfn.start_execution(
            stateMachineArn=self.machine,
            name=f"{self.run}-{index}",
            input=json.dumps({"bucket": self.bucket, "key": key}),
        )
        stream = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            data: bytes = stream.read()
        finally:
            stream.close()
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return data


def _pack(frame: VideoFrame, audio: list[npt.NDArray[np.float32]]) -> bytes:
    samples = np.concatenate(audio, axis=1) if audio else np.zeros((2, 0), np.float32)
    h, w = frame.luma.shape
    head = _HEAD.pack(frame.t, h, w, samples.shape[1], frame.full_range)
    return head + np.ascontiguousarray(frame.luma).tobytes() + samples.astype(np.float32).tobytes()


def _unpack(data: bytes, audio_t: float) -> tuple[VideoFrame, AudioBlock | None]:
    t, h, w, n, full_range = _HEAD.unpack_from(data)
    luma = np.frombuffer(data, np.uint8, h * w, _HEAD.size).reshape(h, w)
    samples = np.frombuffer(data, np.float32, offset=_HEAD.size + h * w).reshape(-1, n) if n else None
    block = None if samples is None else AudioBlock(t=audio_t, samples=samples, rate=ANALYSIS_RATE)
    return VideoFrame(t=t, luma=luma, full_range=bool(full_range)), block


def run_frames(url: str, frames: int, handoff: Handoff | None) -> int:
    """Read ``frames`` pictures as the session does (its MediaReader) and feed every detector
    (as the session's dispatcher does) in memory or through ``handoff``."""
    dispatch = Dispatcher(build_detectors(StreamContext()), lambda found: None)
    done = 0
    pending: list[AudioBlock] = []  # the audio read since the last picture
    for event in reader(url).events():
        if type(event) is AudioBlock:
            pending.append(event)
            continue
        if type(event) is not VideoFrame:
            continue
        frame: VideoFrame = event
        blocks = pending
        if handoff is not None:
            audio_t = pending[0].t if pending else 0.0
            frame, block = _unpack(handoff.send(done, _pack(frame, [b.samples for b in pending])), audio_t)
            blocks = [] if block is None else [block]
        pending = []
        for block in blocks:
            dispatch.audio(block)
        dispatch.video(frame)
        done += 1
        if done >= frames:
            break
    return done


def measure_per_frame(clip: Clip, frames: int, repeats: int, endpoint: str | None = None) -> PerFrame:
    """Both variants on ``frames`` pictures of ``clip``, in ``repeats`` paired rounds (medians);
    ``endpoint``: an emulator already running (else one is started, and stopped after)."""
    run_frames(clip.url, min(frames, 10), None)  # warm-up
    emulator = None if endpoint is not None else local.start_emulator(port=local.free_port())
    try:
        handoff = Handoff(emulator.url if emulator is not None else str(endpoint))
        try:
            run_frames(clip.url, 3, handoff)  # warm-up: connections, SDK caches
            handoff.calls.clear()
            rounds = paired(
                {
                    MEMORY: lambda: run_frames(clip.url, frames, None),
                    HANDOFF: lambda: run_frames(clip.url, frames, handoff),
                },
                MEMORY,
                repeats,
            )
            calls = Counter({op: n // repeats for op, n in handoff.calls.items()})
        finally:
            handoff.close()
    finally:
        if emulator is not None:
            emulator.stop()
    memory, through = rounds.series[MEMORY], rounds.series[HANDOFF]
    return PerFrame(
        clip=clip,
        frames=frames,
        memory_cpu_s=memory.cpu_s,
        memory_wall_s=memory.wall_s,
        handoff_cpu_s=through.cpu_s,
        handoff_wall_s=through.wall_s,
        calls=calls,
        cpu_ratio=rounds.ratio(HANDOFF, cpu=True),
    )
