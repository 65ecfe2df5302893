"""RLinf file mode: a crash-safe, host-side trajectory replay buffer in RLinf's on-disk layout.

See ``docs/rlinf-mode.md`` for a guide and ``docs/differences-from-rlinf.md`` for what
deliberately differs from RLinf.
"""

from jaxbuf.errors import CheckpointError, TrajectoryFileError, TrajectoryWriteError
from jaxbuf.trajectory.buffer import TrajectoryReplayBuffer, default_storage_dir
from jaxbuf.trajectory.checkpoint import LoadReport, SkippedTrajectory
from jaxbuf.trajectory.formats import (
    DEFAULT_FORMAT,
    FORMATS,
    read_trajectory_file,
    write_trajectory_file,
)
from jaxbuf.trajectory.listing import partition_ids, read_listing
from jaxbuf.trajectory.names import trajectory_file_name
from jaxbuf.trajectory.trajectory import Trajectory, TrajectoryShape
from jaxbuf.trajectory.transfer import TransferReport, merge_buffers, split_buffer

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "CheckpointError",
    "LoadReport",
    "SkippedTrajectory",
    "Trajectory",
    "TrajectoryFileError",
    "TrajectoryReplayBuffer",
    "TrajectoryShape",
    "TrajectoryWriteError",
    "TransferReport",
    "default_storage_dir",
    "merge_buffers",
    "partition_ids",
    "read_listing",
    "read_trajectory_file",
    "split_buffer",
    "trajectory_file_name",
    "write_trajectory_file",
]
