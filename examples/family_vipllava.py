"""A model family added from outside the package: one ModelSpec row (docs/ADDING_A_FAMILY.md).

VipLLaVA (``VipLlavaForConditionalGeneration``, ``config.model_type == "vipllava"``) is not in
ReasonEdit's table. Importing this module registers it; name the module in the hparams YAML
(``model_specs: [family_vipllava]``) or on the command line (``--model-specs family_vipllava``) with
this folder on ``PYTHONPATH``.
"""

from reasonedit_plugin import ModelSpec, register_model_spec

VIPLLAVA = register_model_spec(ModelSpec(
    model_type="vipllava",
    model_class="VipLlavaForConditionalGeneration",
    vision_tower="model.vision_tower",                   # CLIP vision encoder
    mlp_template="model.vision_tower.encoder.layers.{L}.mlp",
    first_linear="fc1",                                  # its INPUT is the key activation v(image)
    num_blocks_attr="vision_config.num_hidden_layers",
    language_model="model.language_model",
    projectors=("model.multi_modal_projector",),         # AutoLayer also scans these linears
    prompt_template="USER: <image>\n{text} ASSISTANT:",  # used only when the processor has no chat template
    notes="VipLLaVA: LLaVA-1.5 with a projector over several CLIP layers; processor as LLaVA's.",
))
