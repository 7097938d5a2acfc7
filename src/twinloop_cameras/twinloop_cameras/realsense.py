"""RealSense streams with pyrealsense2 (no rclpy): colour, depth aligned to colour, intrinsics.

A stream opens one device by serial number (or a recorded .bag/.db3 file, which runs the same
librealsense pipeline), aligns depth to colour, and reconnects after an unplug. Import rclpy
before this module in ROS processes: pyrealsense2 carries its own Fast DDS and importing it first
crashes the process at exit.
"""

import time
from dataclasses import dataclass

import numpy as np
import pyrealsense2 as rs

from twinloop_twin.cameras import Intrinsics


class NoDevice(RuntimeError):
    """The requested camera is not connected; the message lists what is."""


@dataclass
class StreamConfig:
    """Which device (or recording) a stream opens, and its colour and depth resolution and rate."""

    name: str  # ROS camera name, e.g. "front"
    serial: str = ''  # device serial number; empty: the only connected device
    playback_file: str = ''  # a recorded file instead of a device (tests, replays)
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclass
class Frame:
    """One frame: colour, depth aligned to colour, the colour intrinsics and device time."""

    rgb: np.ndarray  # (h, w, 3) uint8
    depth: np.ndarray  # (h, w) float32 metres, aligned to colour; 0 = no reading
    intrinsics: Intrinsics  # of the colour stream (depth is aligned to it)
    timestamp: float  # device time [s]
    number: int


def connected_serials():
    """Serial numbers of the connected RealSense devices."""
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


class RealSenseStream:
    """One RealSense camera (or recording): colour and depth aligned to colour."""

    def __init__(self, config: StreamConfig, timeout_ms=2000):
        self.config, self.timeout_ms = config, timeout_ms
        self.pipeline = None
        self.align = rs.align(rs.stream.color)
        self.depth_scale = 0.001
        self.intrinsics = None

    def open(self):
        """Start the pipeline on the configured device or file; NoDevice says what is connected."""
        cfg = rs.config()
        if self.config.playback_file:
            cfg.enable_device_from_file(self.config.playback_file, repeat_playback=True)
        else:
            serials = connected_serials()
            if not serials:
                raise NoDevice(
                    f'camera {self.config.name}: no RealSense device connected (check USB 3 cable and udev rules)'
                )
            if self.config.serial and self.config.serial not in serials:
                raise NoDevice(
                    f'camera {self.config.name}: serial {self.config.serial} not connected; connected: {serials}'
                )
            if not self.config.serial and len(serials) > 1:
                raise NoDevice(
                    f'camera {self.config.name}: {len(serials)} devices connected ({serials}); set its serial'
                )
            cfg.enable_device(self.config.serial or serials[0])
            cfg.enable_stream(rs.stream.color, self.config.width, self.config.height, rs.format.rgb8, self.config.fps)
            cfg.enable_stream(rs.stream.depth, self.config.width, self.config.height, rs.format.z16, self.config.fps)
        self.pipeline = rs.pipeline()
        profile = self.pipeline.start(cfg)
        self.depth_scale = profile.get_device().first_depth_sensor().get_depth_scale()
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.intrinsics = Intrinsics(color.width, color.height, color.fx, color.fy, color.ppx, color.ppy)

    def read(self):
        """The next frame with both colour and depth; raises RuntimeError on timeout."""
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            frames = self.pipeline.wait_for_frames(self.timeout_ms)
            aligned = self.align.process(frames)
            color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
            if color and depth:  # a software device's first framesets can be colour-only
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f'camera {self.config.name}: no frame with both colour and depth')
        rgb = np.asanyarray(color.get_data()).copy()
        depth_m = np.asanyarray(depth.get_data()).astype(np.float32) * self.depth_scale
        return Frame(rgb, depth_m, self.intrinsics, color.get_timestamp() / 1000.0, color.get_frame_number())

    def close(self):
        """Stop the pipeline if it runs; safe to call twice."""
        if self.pipeline is not None:
            try:
                self.pipeline.stop()
            except RuntimeError:
                pass
            self.pipeline = None


def record_software_device(path, frames, intrinsics, depth_units=0.001, serial='twinloop-sw-0', fps=30):
    """Write synthetic (rgb, depth_m) frames to a librealsense recording through a software device.

    The file plays back through rs.pipeline like a real camera: the test path for the node."""
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, serial)
    device.register_info(rs.camera_info.name, 'twinloop software device')
    depth_sensor, color_sensor = device.add_sensor('Depth'), device.add_sensor('Color')
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy = intrinsics.width, intrinsics.height, intrinsics.fx, intrinsics.fy
    intr.ppx, intr.ppy, intr.model, intr.coeffs = intrinsics.cx, intrinsics.cy, rs.distortion.none, [0.0] * 5

    def stream(kind, uid, fmt, bpp):
        vs = rs.video_stream()
        vs.type, vs.uid, vs.index, vs.fmt, vs.bpp = kind, uid, 0, fmt, bpp
        vs.width, vs.height, vs.fps, vs.intrinsics = intrinsics.width, intrinsics.height, fps, intr
        return vs

    depth_profile = depth_sensor.add_video_stream(stream(rs.stream.depth, 0, rs.format.z16, 2))
    color_profile = color_sensor.add_video_stream(stream(rs.stream.color, 1, rs.format.rgb8, 3))
    depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
    identity = rs.extrinsics()
    identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
    depth_profile.register_extrinsics_to(color_profile, identity)

    recorder = rs.recorder(str(path), device)
    sync = rs.syncer()
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    depth_sensor.start(sync)
    color_sensor.start(sync)
    for number, (rgb, depth_m) in enumerate(frames):
        timestamp = number * 1000.0 / fps
        for sensor, profile, pixels, bpp in (
            (color_sensor, color_profile, np.ascontiguousarray(rgb, np.uint8), 3),
            (depth_sensor, depth_profile, np.round(np.asarray(depth_m) / depth_units).astype(np.uint16), 2),
        ):
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, intrinsics.width * bpp
            frame.timestamp, frame.domain, frame.frame_number = timestamp, rs.timestamp_domain.hardware_clock, number
            frame.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(frame)
        sync.wait_for_frames(1000)
    for sensor in (depth_sensor, color_sensor):
        sensor.stop()
        sensor.close()
    del recorder
