"""``embedding.overlap_question``: a new question is embedded on a worker thread while the answer's own pass
reads the image (``KeyEncoder.prefetch_text``); the vector is the one ``text`` would compute itself."""

import threading

import pytest
import torch

from reasonedit_plugin.config import ReasonEditConfig
from reasonedit_plugin.embedding import KeyEncoder
from reasonedit_plugin.errors import ConfigError


class SlowEncoder:
    """Embeds a text as its character codes; waits for ``release`` and records the calling thread."""

    def __init__(self):
        self.release = threading.Event()
        self.threads: list[str] = []

    def encode(self, texts):
        self.threads.append(threading.current_thread().name)
        if "boom" in texts[0]:
            raise RuntimeError("encoder failed")
        assert self.release.wait(10)
        return torch.tensor([[float(ord(c)) for c in t[:4].ljust(4)] for t in texts])


def encoder():
    text = SlowEncoder()
    return KeyEncoder(vlm=None, text_encoder=text, vision_module="m", scale=1.0), text


def test_a_prefetched_question_is_embedded_on_the_worker_and_waited_for():
    keys, text = encoder()
    keys.prefetch_text("What tribe?")
    keys.prefetch_text("What tribe?")                              # under way: not submitted twice
    text.release.set()
    vector = keys.text(["What tribe?"])
    torch.testing.assert_close(vector, torch.tensor([[87.0, 104.0, 97.0, 116.0]]))
    assert text.threads == ["reasonedit-question_0"] and not keys._pending
    keys.text(["What tribe?"])                                     # cached now
    keys.prefetch_text("What tribe?")
    assert len(text.threads) == 1


def test_a_prefetch_nobody_asked_for_is_kept_and_a_failed_one_raises_where_asked():
    keys, text = encoder()
    text.release.set()
    keys.prefetch_text("unasked")
    keys._pending["unasked"].result()
    keys.prefetch_text("other")                                     # collects the finished one
    assert "unasked" in keys._text_cache
    keys.prefetch_text("boom")
    with pytest.raises(RuntimeError, match="encoder failed"):      # the worker's error, in the caller
        keys.text(["boom"])
    keys.forget_text()
    assert not keys._pending and not keys._text_cache


def test_overlap_needs_the_prescreen():
    with pytest.raises(ConfigError, match="image_prescreen"):
        ReasonEditConfig.from_dict({"embedding": {"overlap_question": True}})
    cfg = ReasonEditConfig.from_dict({"embedding": {"overlap_question": True},
                                      "retrieval": {"nullset": {"image_prescreen": True}}})
    assert cfg.embedding.overlap_question


def test_a_forked_child_does_not_wait_for_its_parents_worker():
    """A process forked while a prefetch is under way has neither the worker's thread nor its result: it
    encodes the question itself (waiting for the parent's future would hang for ever)."""
    import os
    import signal

    keys, text = encoder()
    keys.prefetch_text("asked before the fork")                     # the parent's worker is blocked
    pid = os.fork()
    if pid == 0:  # the child: a hang ends in SIGALRM, an error in exit status 1
        signal.alarm(5)
        ok = False
        try:
            text.release.set()
            ok = keys.text(["asked before the fork"]).shape == (1, 4) and text.threads[-1] == "MainThread"
            keys.prefetch_text("after the fork")
            ok = ok and keys.text(["after the fork"]).shape == (1, 4) and text.threads[-1] != "MainThread"
        finally:
            os._exit(0 if ok else 1)
    text.release.set()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert keys.text(["asked before the fork"]).shape == (1, 4)
