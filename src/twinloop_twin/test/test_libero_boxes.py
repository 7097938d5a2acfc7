"""Planner boxes of LIBERO bodies: a fixture keeps its geoms in child bodies (the stove, the
cabinet), and its box must cover them (it was empty: the planner placed a bowl on a stove of
size zero, 1.5 cm off a target it could not reach)."""

import mujoco
import numpy as np

from twinloop_twin.libero_twin import bottom_centre

FIXTURE = """
<mujoco>
  <worldbody>
    <body name="stove" pos="0.5 0.2 0.0" euler="0 0 90">
      <body name="stove_main" pos="0 0 0.02">
        <geom type="box" size="0.15 0.1 0.02"/>
        <body name="burner" pos="0.05 0 0.025">
          <geom type="cylinder" size="0.04 0.005"/>
        </body>
      </body>
      <geom type="sphere" size="0.01" pos="0 0 0.2" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
</mujoco>
"""


def test_a_fixture_box_covers_the_geoms_of_its_child_bodies_in_its_own_frame():
    model = mujoco.MjModel.from_xml_string(FIXTURE)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    offset, extents = bottom_centre(model, data, model.body('stove').id)
    assert np.allclose(extents, (0.30, 0.20, 0.05), atol=1e-6)  # base 4 cm + burner 1 cm; the visual sphere is left out
    assert np.allclose(offset, (0.0, 0.0, 0.0), atol=1e-6)  # in the body's frame, not turned by its 90 degree yaw
    assert np.allclose(bottom_centre(model, data, model.body('burner').id)[1], (0.08, 0.08, 0.01), atol=1e-6)
