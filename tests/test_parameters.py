"""vit_raw.parameters: layer ids (BEiT/MAE layer-wise lr decay) and weight-decay exemptions (timm/DeiT) for every
variable the model creates."""
import pytest
import tensorflow.compat.v1 as tf

from vit_raw import configs
from vit_raw import model
from vit_raw import parameters

TINY = configs.get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
BLOCK = ("ln_attn/scale", "ln_attn/bias", "attention/qkv/kernel", "attention/qkv/bias", "attention/out/kernel",
         "attention/out/bias", "ln_mlp/scale", "ln_mlp/bias", "mlp/dense_0/kernel", "mlp/dense_0/bias",
         "mlp/dense_1/kernel", "mlp/dense_1/bias")


def _graph_variables():
  model.vit(tf.zeros([1, 8, 8, 3]), TINY, 5, is_training=False, representation_size=6)
  return tf.global_variables()


def test_layer_id_of_every_variable_of_a_tiny_model():
  expected = {"vit/embedding/kernel": 0, "vit/embedding/bias": 0, "vit/cls": 0, "vit/pos_embedding": 0}
  for i in range(TINY.num_layers):
    expected.update({"vit/encoderblock_%d/%s" % (i, name): i + 1 for name in BLOCK})
  for name in ("encoder_norm/scale", "encoder_norm/bias", "pre_logits/kernel", "pre_logits/bias", "head/kernel",
               "head/bias"):
    expected["vit/" + name] = TINY.num_layers + 1
  got = {v.op.name: parameters.layer_id(v.op.name, TINY.num_layers) for v in _graph_variables()}
  assert got == expected
  assert parameters.layer_id("vit/encoderblock_1/mlp/dense_0/kernel:0", 2) == 2  # a tensor name
  assert parameters.layer_id("encoderblock_1/mlp/dense_0/kernel/Adam", 2) == 2  # its slot, scope-relative


@pytest.mark.parametrize("name", ["global_step", "vit/encoderblock_2/ln_mlp/scale", "vit/something/kernel"])
def test_layer_id_of_a_foreign_name_is_one_clear_line(name):
  with pytest.raises(ValueError) as e:
    parameters.layer_id(name, 2)
  assert name in str(e.value) and "\n" not in str(e.value)


def test_weight_decay_exempts_biases_norms_position_embedding_and_class_token():
  exempt = sorted(
      v.op.name for v in _graph_variables() if parameters.exempt_from_weight_decay(v.op.name, v.shape.as_list()))
  expected = [
      "vit/cls", "vit/embedding/bias", "vit/encoder_norm/bias", "vit/encoder_norm/scale", "vit/head/bias",
      "vit/pos_embedding", "vit/pre_logits/bias"
  ]
  for i in range(TINY.num_layers):
    expected += ["vit/encoderblock_%d/%s" % (i, name) for name in BLOCK if not name.endswith("kernel")]
  assert exempt == sorted(expected)
  shapes = parameters.variable_shapes(TINY, 5, 8)
  assert [
      n for n in shapes if not parameters.exempt_from_weight_decay(n, shapes[n])
  ] == (["embedding/kernel"] +
        ["encoderblock_%d/%s" % (i, n) for i in range(2) for n in BLOCK if n.endswith("kernel")] + ["head/kernel"])
