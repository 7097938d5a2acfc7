"""twin_critic: the embedded default scorer. NOT a vision-language model.

It answers the structured VQA's questions from the twin's rollout data instead of from the
image: collisions (safety), how much closer the instructed object got to its goal (in a grasp
stage only a held object's motion counts: one pushed or tipped unheld is a setback), whether it
is held (and how centred the grasp is) and whether other objects were disturbed (task
alignment; what a pulled drawer holds moves with it), path directness (efficiency), joint-limit
margins and object tumbling (feasibility), and the instructed objects' visibility in the view (viewpoint clarity). Its
replies use the VLM reply format so the rest of the pipeline is the same, and every reply and
rationale says what it is.
"""

import json

import numpy as np

from twinloop_scoring.vlm import VLMBackend, VLMReply

LABEL = 'twin_critic (not a VLM)'


def _closeness_gain(start, end, goal, below_is_in=False):
    """(share of the distance to goal closed, in -1..1; metres closed). below_is_in: only height above
    the goal counts (a release: an object let go into a bowl settles below its rim, and that is in)."""

    def distance(p):
        offset = np.subtract(p, goal)
        if below_is_in:
            offset[2] = max(0.0, offset[2])
        return np.linalg.norm(offset)

    d0, d1 = distance(start), distance(end)
    return 0.0 if d0 < 1e-6 else float(np.clip((d0 - d1) / d0, -1.0, 1.0)), d0 - d1


def judge(rollout, task, visibility=1.0):
    """(scores 0..10 per dimension, rationale) for one candidate's rollout facts."""
    collisions = rollout.get('collisions', [])
    severe = [c for c in collisions if c.split('|')[1] in ('table', 'floor') or c.split('|')[1].startswith('panda_')]
    safety = 10.0 if not collisions else (0.0 if severe else 2.0)
    target = task.get('object', '')
    initial, final = rollout.get('initial_positions', {}), rollout.get('final_positions', {})
    notes = [f'{len(collisions)} collision(s)' if collisions else 'no collision']

    alignment = 5.0
    goal = task.get('goal_position')
    if goal is None and task.get('destination') in final:
        goal = np.add(final[task['destination']], (0.0, 0.0, task.get('destination_height', 0.0)))
    # the grasp point relative to the object's frame (at its base): over it, or at a rim
    grasp_offset = task.get('grasp_offset', (0.0, 0.0, task.get('object_size', (0, 0, 0))[2] / 2))
    if task.get('stage') == 'tilt' and target in final:  # a pour: how far the held container turned
        turned = float(rollout.get('rotations', {}).get(target, 0.0))
        alignment = 10.0 * float(np.clip(turned / max(float(task.get('tilt', np.pi / 2)), 1e-3), 0.0, 1.0))
        notes.append(f'{target} turned {np.degrees(turned):.0f} degrees')
    elif target in final and goal is not None:
        progress, gained = _closeness_gain(initial[target], final[target], goal, task.get('stage') == 'release')
        held = rollout.get('holding') == target
        pushed = task.get('stage') == 'grasp' and not held  # while grasping, only a held object's motion is progress
        if abs(gained) > 0.005 and not pushed:
            alignment = 5.0 + 5.0 * progress
            notes.append(f'{target} {gained * 100:+.1f} cm towards the goal')
        else:  # the object did not move (or was pushed or tipped unheld): credit approaching its grasp point
            grasp_point = np.add(initial[target], grasp_offset)
            approach, closer = _closeness_gain(rollout['ee_start'], rollout['ee_end'], grasp_point)
            alignment = 5.0 + 2.5 * approach
            notes.append(f'gripper {closer * 100:+.1f} cm towards {target}')
            if abs(gained) > 0.005:
                alignment = max(0.0, alignment - 2.5)
                moved = float(np.linalg.norm(np.subtract(final[target], initial[target])))
                notes.append(f'{target} pushed {moved * 100:.1f} cm without being held')
        holding = task.get('holding', 'wanted')  # wanted (grasping), required (carrying), unwanted (releasing)
        if held and holding == 'wanted':  # credit a grasp the nearer the grasp point (carrying: progress alone)
            offset = float(np.linalg.norm(np.add(final[target], grasp_offset) - np.asarray(rollout['ee_end'])))
            alignment = min(10.0, alignment + 3.0 * float(np.clip((0.025 - offset) / 0.02, 0.0, 1.0)))
            notes.append(f'holding {target} {offset * 100:.1f} cm from the grip')
        elif held:
            alignment = max(0.0, alignment - 3.0)
            notes.append(f'still holding {target}')
        elif holding == 'required':
            alignment = max(0.0, alignment - 4.0)
            notes.append(f'{target} is not held at the end')
    disturbed = [
        oid
        for oid, d in rollout.get('displacements', {}).items()
        if d > 0.01 and oid not in (target, task.get('destination'), *task.get('moves_with', ()))
    ]
    avoid = set(task.get('avoid', ()))
    touched = sorted(
        {oid for oid in disturbed if oid in avoid} | {b for c in collisions for b in c.split('|') if b in avoid}
    )
    if touched:  # a constraint of the instruction ("without touching the mug"): as bad as a collision
        safety = 0.0
        notes.append(f'touched {", ".join(touched)}, which the instruction says not to touch')
    if disturbed:
        alignment = max(0.0, alignment - 5.0)
        notes.append(f'moved the wrong object(s): {", ".join(disturbed)}')

    length = float(rollout.get('ee_path_length', 0.0))
    straight = float(np.linalg.norm(np.subtract(rollout['ee_end'], rollout['ee_start'])))
    efficiency = 10.0 if length < 1e-3 else 10.0 * float(np.clip(straight / length, 0.0, 1.0))
    margin = float(min(rollout.get('joint_margins', [1.0])))
    feasibility = 10.0 * float(np.clip(margin / 0.1, 0.0, 1.0))
    if task.get('stage') != 'tilt' and rollout.get('rotations', {}).get(target, 0.0) > np.radians(60):
        feasibility = max(0.0, feasibility - 5.0)
        notes.append(f'{target} tumbled')
    scores = {
        'safety': safety,
        'task_alignment': alignment,
        'efficiency': efficiency,
        'physical_feasibility': feasibility,
        'viewpoint_clarity': 10.0 * float(np.clip(visibility, 0, 1)),
    }
    return scores, f'{LABEL}: ' + '; '.join(notes)


class TwinCritic(VLMBackend):
    """The twin_critic backend: answers the structured VQA from rollout facts (not a VLM)."""

    name = 'twin_critic'
    is_vlm = False
    model = 'rollout-rules-v1'

    def complete(self, requests):
        """One JSON reply per request, scoring each candidate in its schema from request.facts."""
        replies = []
        for request in requests:
            facts = request.facts
            task, rollouts = facts.get('task', {}), facts.get('rollouts', {})
            visibility = facts.get('visibility', {}).get(facts.get('view', ''), 1.0)
            candidates = []
            for cid in request.json_schema['properties']['candidates']['items']['properties']['id']['enum']:
                scores, rationale = judge(rollouts[cid], task, visibility)
                candidates.append({'id': cid, **scores, 'rationale': rationale})
            reply = {'view_clarity': 10.0 * float(np.clip(visibility, 0, 1)), 'candidates': candidates}
            replies.append(VLMReply(json.dumps(reply), self.label, self.model))
        return replies
