"""Loading TensorFlow: once, quickly, and quietly.

The blur module and the MTCNN backend import TensorFlow through :func:`import_tensorflow`, which
skips TensorFlow's eager Keras import (seconds per process) and keeps its native start-up
chatter out of the user's terminal. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading

_TF_IMPORT_LOCK = threading.Lock()

# What TensorFlow's native code prints while it starts on a machine without a GPU, or with a
# generic build: harmless, and it would otherwise land in the middle of progress bars. Whole
# message texts, not file names: the same files also print the messages that matter (e.g.
# cpu_feature_guard's "compiled to use AVX instructions, but these aren't available").
_TF_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine, GPU will not be used.",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)
# On a machine without NVIDIA devices cuInit is bound to fail; with one, it is news.
_NO_GPU_NOISE = ("failed call to cuInit",)


def _noise() -> tuple[str, ...]:
    has_nvidia = os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")
    return _TF_NOISE + (() if has_nvidia else _NO_GPU_NOISE)


@contextlib.contextmanager
def quiet_tensorflow_start():
    """Pass what is written to file descriptor 2 meanwhile through a ``grep -v`` child
    process that drops TensorFlow's start-up chatter (native code writes it there directly,
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says) and forwards everything else line by line.

    A child process, not a buffer or a thread: lines reach the terminal as they come (server
    logs are not held back), nothing can block on the GIL, and if TensorFlow aborts the
    process while loading (an unsupported CPU), its last words still get out. Without
    ``grep`` or a real stderr nothing is filtered. A user who lowered ``TF_CPP_MIN_LOG_LEVEL``
    below our default of 2 asked for TensorFlow's logs and gets everything.
    """
    grep = shutil.which("grep")
    if grep is None or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") < "2":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (some notebooks, services)
        yield
        return
    patterns = [arg for marker in _noise() for arg in ("-e", marker)]
    try:
        child = subprocess.Popen(
            [grep, "--line-buffered", "-v", "-F", *patterns],
            stdin=subprocess.PIPE,
            stdout=saved,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(child.stdin.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        child.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)


def import_tensorflow():
    """``import tensorflow``, quietly, minus the eager Keras import when that is safe to skip.

    TensorFlow >= 2.16 imports ``keras.src.optimizers`` while it loads (for a SavedModel
    registry we never use), which pulls in all of Keras and, when installed, matplotlib and
    scikit-learn: about 3 s of the 7 s the import takes on a 2-core machine, paid by every
    command-line run and worker. With ``TF_USE_LEGACY_KERAS`` set, that eager import targets
    ``tf_keras`` instead; when ``tf_keras`` is not installed TensorFlow skips it (it catches
    the ImportError). The variable is restored right after, and ``tf.keras`` still loads Keras
    on first use (TensorFlow's lazy loader reads the variable then). Applied only when
    TensorFlow is not loaded yet, the user has not set the variable and ``tf_keras`` is absent.
    Our code that uses Keras (the MTCNN backend) imports TensorFlow through this function
    first, under the same lock, so it never sees the variable set.
    """
    import importlib.util

    # TensorFlow's own info/warning logs only when the user asked for them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's graph rewrites print "oneDNN custom operations are on" (and, without AVX-512,
    # an "E0000 ... DT_UINT8" line that reads like an error) whatever the log level says, and
    # gave the blur no measurable speed (models/ and README bench); off unless the user chose.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with _TF_IMPORT_LOCK:
        skip = (
            "tensorflow" not in sys.modules
            and "TF_USE_LEGACY_KERAS" not in os.environ
            and importlib.util.find_spec("tf_keras") is None
        )
        if skip:
            os.environ["TF_USE_LEGACY_KERAS"] = "1"
        try:
            with quiet_tensorflow_start():
                import tensorflow as tf
        finally:
            if skip:
                os.environ.pop("TF_USE_LEGACY_KERAS", None)
    return tf
