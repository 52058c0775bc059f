"""A stand-in for libcamera's Python bindings, for tests only: the colour spaces and the
transform that picamera2's configurations carry. Nothing here talks to a camera."""

from __future__ import annotations


class ColorSpace:
    """Named colour spaces, created like libcamera's (``ColorSpace.Smpte170m()``)."""

    def __init__(self, name: str):
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColorSpace) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<libcamera.ColorSpace '{self.name}'>"

    @staticmethod
    def Smpte170m() -> ColorSpace:
        return ColorSpace("SMPTE170M")

    @staticmethod
    def Rec709() -> ColorSpace:
        return ColorSpace("Rec709")

    @staticmethod
    def Sycc() -> ColorSpace:
        return ColorSpace("sYCC")


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0):
        self.hflip, self.vflip = hflip, vflip
