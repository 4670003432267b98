"""GRACE through EasyEdit's MultimodalEditor, sequential edits (``reasonedit_plugin.easyedit_grace``): an edit
that falls into a key GRACE already holds must train that key's value, not crash.

The smallest case of the 109-edit failure (docs/BASELINES.md, "GRACE at 109 sequential edits"): the same
edit twice. Needs EasyEdit importable and the easy-vqa images (docs/EASYEDIT.md); skipped otherwise.
"""

from __future__ import annotations


import pytest

pytestmark = pytest.mark.easyedit




@pytest.fixture(scope="module")
def record():
    from reasonedit_plugin.data.split_files import load_split
    from reasonedit_plugin.records import make_records

    try:
        return make_records(load_split("small"))[0]
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"ShapeRules images unavailable: {exc}")


def _grace_editor(use_fix: bool):
    """EasyEdit's MultimodalEditor for the shipped GRACE YAML (2 iterations: the keys are decided in the
    first), with EasyEdit's apply function or the plugin's, given a list of requests as GRACE expects."""
    from reasonedit_plugin import easyedit_baselines as eb
    from reasonedit_plugin.easyedit_grace import apply_grace_to_multimodal_model

    method = eb.make_method("GRACE")  # the plugin's apply function (EasyEditAlgorithm.apply_fix)
    method.hparams.n_iter = 2
    editor = method.mm_editor
    if not use_fix:
        from easyeditor.models.grace.grace_main import apply_grace_to_multimodal_model as easyedit_apply

        editor.apply_algo = easyedit_apply
    else:
        assert editor.apply_algo.__wrapped__ is apply_grace_to_multimodal_model
        editor.apply_algo = apply_grace_to_multimodal_model
    return method, editor


def _edit(editor, record) -> None:
    from reasonedit_plugin.easyedit_methods import edit_arguments

    apply = editor.apply_algo
    editor.apply_algo = lambda model, tok, request, *a, **k: apply(model, tok, [request], *a, **k)
    try:
        editor.edit(**edit_arguments([record]), sequential_edit=True, verbose=False)
    finally:
        editor.apply_algo = apply


def _layer(method) -> str:
    return method.hparams.inner_params[0].rsplit(".", 1)[0]


def test_easyedit_grace_freezes_its_codebook_and_crashes_on_a_repeated_edit(easyedit, record):
    """EasyEdit's own apply function: the second, identical edit adds no key, reads the values EasyEdit's
    GRACE constructor froze, and its loss has no grad_fn. Fails once EasyEdit fixes it."""
    from reasonedit_plugin.easyedit_grace import codebook_values, grace_adapter

    method, editor = _grace_editor(use_fix=False)
    _edit(editor, record)
    assert codebook_values(editor.model, _layer(method)).requires_grad  # the first edit's fresh values
    try:
        _edit(editor, record)
    except RuntimeError as exc:
        assert "does not require grad" in str(exc)
        adapter = grace_adapter(editor.model, _layer(method))
        assert adapter.keys.shape[0] == 1  # no key added: the edit fell into the first one
        assert not adapter.values.requires_grad  # frozen by GRACE.__init__ (GRACE.py:44-45)
    else:
        pytest.fail("EasyEdit's GRACE no longer fails on a repeated sequential edit: "
                    "reasonedit_plugin.easyedit_grace may no longer be needed (remove GRACE's apply_fix in "
                    "easyedit_setup.ALGORITHMS; update docs/BASELINES.md and docs/UPSTREAM.md)")


def test_plugin_grace_trains_the_value_of_the_key_it_falls_into(easyedit, record):
    """The plugin's apply function: the repeated edit adds no key and trains the one it fell into."""
    from reasonedit_plugin.easyedit_grace import codebook_values, grace_adapter

    method, editor = _grace_editor(use_fix=True)
    _edit(editor, record)
    values = codebook_values(editor.model, _layer(method)).detach().clone()
    _edit(editor, record)
    adapter = grace_adapter(editor.model, _layer(method))
    assert adapter.keys.shape[0] == 1
    assert adapter.values.requires_grad
    assert (adapter.values.detach() - values).abs().max() > 0  # the second edit trained the shared value


def test_comparison_row_repeats_an_edit(easyedit, record):
    """The comparison's GRACE row (EasyEditMethod) edits the same fact twice in its sequence."""
    from reasonedit_plugin import easyedit_baselines as eb

    method = eb.make_method("GRACE")
    method.hparams.n_iter = 2
    assert method.config["apply_fix"] == "reasonedit_plugin.easyedit_grace:apply_grace_to_multimodal_model"
    method.apply(record)
    method.apply(record)
    assert method.extra["easyedit_native"]["edits"] == 2
