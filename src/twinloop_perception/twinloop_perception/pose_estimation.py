"""6D pose estimation of known objects from RGB-D frames (no rclpy).

Pipeline (detect): back-project every camera's depth into one world-frame cloud (multi-view
fusion through the extrinsics) -> crop to the workspace -> remove the robot (its collision
geometry at the measured joints, inflated) -> remove the table plane (RANSAC, vertical normal)
-> cluster (DBSCAN) -> per cluster and candidate object: hypotheses from FPFH + RANSAC global
registration and from upright poses at the cluster's principal yaw, each refined by
point-to-plane ICP against the object's mesh -> score = ICP fitness x colour agreement -> each
cluster (largest first) takes the best-scoring object not yet found; points an accepted object
explains are removed from the clusters still to come (a view can split one object in two), and a
cluster two objects share (a cube in a bowl) is explained in turns.
Track: warm-started ICP from the previous poses on the cloud near each object; an object whose
fit drops below `lost_fitness` (or its colour below `lost_colour`) is searched for globally again.

Symmetric objects (DetectedObject.SYMMETRY_*) are reported in one canonical pose: discrete
symmetries (a cube's 24, a block's 4) pick the equivalent rotation nearest the previous estimate
(or identity), axial ones (bowls, cups) the one with no turn about their axis. rotation_error()
measures error modulo the symmetry.
"""

from collections import deque
from dataclasses import dataclass, field, replace
from itertools import permutations, product

import mujoco
import numpy as np
import open3d as o3d
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from twinloop_twin import objects as shapes
from twinloop_core.gripper import closed_on_something

o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)


# [m] fingers closed this much narrower than an object's grip span are not around it (through ROS a
# learned policy pinched 6-7 mm of a 4 cm cube's edge, the cube stayed on the table, and tracking carried
# it up with the hand: a false "raised 16 cm")
GRIP_SPAN_SLACK = 0.01


@dataclass
class Frame:
    """One camera's synchronised colour and depth with its model and pose in the world."""

    rgb: np.ndarray  # (h, w, 3) uint8
    depth: np.ndarray  # (h, w) float [m] along the optical axis; 0 or nan: no reading
    K: np.ndarray  # 3x3 intrinsics
    position: np.ndarray  # optical frame origin in the world [m]
    rotation: np.ndarray  # optical frame axes in the world (3x3)


@dataclass
class ObjectModel:
    """A known object: its mesh (object frame at the bottom face's centre), colour, symmetry."""

    id: str
    label: str
    mesh_id: str
    color: np.ndarray  # rgb in [0, 1]
    extents: np.ndarray  # [m]
    symmetry: int
    static: bool
    points: np.ndarray  # surface samples in the object frame
    cloud: o3d.geometry.PointCloud = None
    tree: cKDTree = None  # of the cloud's points, for fitness and explain-away
    features: o3d.pipelines.registration.Feature = None
    group: list = field(default_factory=list)  # discrete symmetry rotations (3x3)
    grip_span: float = 0.0  # [m] the narrowest opening fingers closed around it read (0: thin walls, any)


@dataclass
class Estimate:
    """An object's estimated pose in the world: position [m], quat (w, x, y, z), size [m], fit quality."""

    id: str
    label: str
    mesh_id: str
    position: np.ndarray
    quat: np.ndarray  # w x y z
    size: np.ndarray
    symmetry: int
    confidence: float
    fitness: float
    rmse: float
    tracked: bool = False


@dataclass
class EstimatorConfig:
    """Pose estimator tuning; lengths in metres, boxes in the world frame."""

    voxel: float = 0.004  # [m] cloud and model resolution
    workspace: tuple = ((0.15, 0.95), (-0.6, 0.6), (-0.02, 0.45))  # world box [m]
    robot_margin: float = 0.005  # [m] inflation of the robot's geometry (more eats held objects)
    table_height: float = 0.0  # [m] fallback when no plane is found
    table_margin: float = 0.004  # [m] points this close to the plane are table
    cluster_eps: float = 0.012  # [m] DBSCAN neighbourhood
    cluster_min_points: int = 25
    fit_distance: float = 0.005  # [m] inlier distance for fitness
    min_confidence: float = 0.45  # below: not detected
    lost_fitness: float = 0.55  # tracking below this: search globally
    lost_colour: float = 0.3  # ... or with a colour agreement below this
    held_redetect_confidence: float = (
        0.8  # a held object the cameras lost moves elsewhere only on a detection this sure
    )
    resting_fitness: float = 0.9  # tracking below this also tries poses resting on the table/support
    colour_sigma: float = 0.18  # width of the colour agreement (unit rgb directions)
    min_colour: float = 0.1  # objects agreeing less are not tried on a cluster (nor on a point)
    dark: float = 0.08  # points darker than this (every channel) have no reliable colour
    max_candidates: int = 4  # objects tried per cluster (by colour)
    ransac_iterations: int = 20000
    upright_enough: float = 0.9  # an upright fit this good skips FPFH + RANSAC
    icp_starts: int = 6  # initial poses refined by ICP per object and cluster (detection)
    track_stride: int = 2  # pixel stride of tracking clouds (detection: 1)
    track_min_points: int = 8  # fewer points near a tracked object: lost
    seed: int = 0


def _pcd(points, normals=None):
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, float)))
    if normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(np.asarray(normals, float))
    return cloud


def _transform(rotation, translation):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation, translation
    return T


def _unit_colour(rgb):
    rgb = np.asarray(rgb, float)
    return rgb / max(np.linalg.norm(rgb), 1e-6)


def symmetry_group(mesh, tolerance=0.001):
    """Rotations among the 24 axis-aligned ones (about the bounding-box centre) that map the mesh's
    vertices onto its vertices (exact for meshes built of boxes, as the discrete shapes are)."""
    centre = mesh.bounds.mean(axis=0)
    local = mesh.vertices - centre
    tree = cKDTree(local)
    group = []
    for perm, signs in product(permutations(range(3)), product((1, -1), repeat=3)):
        R = np.zeros((3, 3))
        R[range(3), perm] = signs
        if np.linalg.det(R) < 0.5:
            continue
        distances, _ = tree.query(local @ R.T)
        if distances.max() < tolerance:
            group.append(R)
    return group


def build_models(object_configs, config=EstimatorConfig()):
    """ObjectModels of scene object configs (twinloop_twin.scene.ObjectConfig), their surfaces
    sampled densely enough for the voxel size."""
    out = []
    for o in object_configs:
        shape = shapes.make_shape(o.kind, **o.params)
        mesh = shapes.shape_mesh(shape, seen_only=True)  # glass is not registered against
        samples = int(max(2000, 4 * mesh.area / config.voxel**2))
        points, faces = trimesh.sample.sample_surface(mesh, samples, seed=config.seed)
        model = ObjectModel(
            o.id,
            o.label,
            o.mesh_id,
            np.asarray(o.color[:3], float),
            np.asarray(shape.extents),
            shape.symmetry,
            shape.static,
            np.asarray(points),
        )
        model.cloud = _pcd(points, mesh.face_normals[faces]).voxel_down_sample(config.voxel)
        model.tree = cKDTree(np.asarray(model.cloud.points))
        model.features = _fpfh(model.cloud, config.voxel)
        model.group = symmetry_group(mesh) if shape.symmetry != shapes.SYMMETRY_AXIAL else []  # bins are square too
        model.grip_span = grip_span(shape)
        out.append(model)
    return out


def grip_span(shape):
    """The narrowest opening [m] of fingers closed around an object of one solid part (a cube, a block, a
    book: its smallest extent); 0 for shapes of several parts (a bowl's rim, a shoe's collar fit between
    fingers closed narrower than the object)."""
    return float(min(shape.extents)) if len(shape.parts) == 1 else 0.0


def _fpfh(cloud, voxel):
    if not cloud.has_normals():
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=voxel * 2.5, max_nn=30))
    return o3d.pipelines.registration.compute_fpfh_feature(
        cloud, o3d.geometry.KDTreeSearchParamHybrid(radius=voxel * 5, max_nn=100)
    )


def backproject(frame, stride=1):
    """World points and colours of one frame's valid depth pixels."""
    depth = frame.depth[::stride, ::stride].astype(float)
    rgb = frame.rgb[::stride, ::stride]
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0.05))
    z = depth[v, u]
    K = frame.K
    x = (u * stride - K[0, 2]) * z / K[0, 0]
    y = (v * stride - K[1, 2]) * z / K[1, 1]
    optical = np.column_stack([x, y, z])
    return optical @ np.asarray(frame.rotation).T + frame.position, rgb[v, u].astype(float) / 255.0


class JointHistory:
    """Recent robot joint states by stamp, so the robot is cut out of a frame at the joints it had
    when the frame was captured: images arrive later than joint states, and an arm in motion cut
    out at newer joints leaves its hand in the cloud (where tracking can fit an object to it)."""

    def __init__(self, seconds=5.0):
        self.seconds, self.samples = seconds, deque()  # (stamp [s], arm joints, finger joints)

    def add(self, stamp, arm, fingers):
        """Record the arm and finger joints at stamp [s]; drops states older than `seconds`."""
        if self.samples and stamp < self.samples[-1][0]:  # time went back (a restarted simulation)
            self.samples.clear()
        self.samples.append((stamp, np.asarray(arm, float), np.asarray(fingers, float)))
        while self.samples[0][0] < stamp - self.seconds:
            self.samples.popleft()

    def at(self, stamp, tolerance=0.03):
        """(arm, fingers) at stamp, interpolated between the states around it (or the nearest within
        tolerance [s]); None when no state is that close (not received yet, or already dropped)."""
        if not self.samples:
            return None
        times = [s[0] for s in self.samples]
        i = int(np.searchsorted(times, stamp))
        if 0 < i < len(times):
            (t0, a0, f0), (t1, a1, f1) = self.samples[i - 1], self.samples[i]
            w = (stamp - t0) / (t1 - t0) if t1 > t0 else 0.0
            return a0 + w * (a1 - a0), tuple(f0 + w * (f1 - f0))
        nearest = self.samples[0] if i == 0 else self.samples[-1]
        return (nearest[1], tuple(nearest[2])) if abs(nearest[0] - stamp) <= tolerance else None


class RobotFilter:
    """Removes points inside the robot's (inflated) collision geometry at the given joints."""

    def __init__(self, model, arm_joints, finger_joints, margin):
        self.model, self.data, self.margin = model, mujoco.MjData(model), margin
        self.arm_qpos = [model.joint(j).qposadr[0] for j in arm_joints]
        self.finger_qpos = [model.joint(j).qposadr[0] for j in finger_joints]
        bodies = [b for b in range(model.nbody) if model.body(b).name.startswith('panda_')]
        self.geoms = [
            g
            for g in range(model.ngeom)
            if model.geom_bodyid[g] in bodies and model.geom_contype[g] + model.geom_conaffinity[g] > 0
        ]

    def grip_pose(self, arm):
        """(position, rotation) of the grip site at the given arm joints."""
        self.data.qpos[self.arm_qpos] = arm
        mujoco.mj_kinematics(self.model, self.data)
        site = self.data.site('panda_grip_site')
        return site.xpos.copy(), site.xmat.reshape(3, 3).copy()

    def keep(self, points, arm, fingers=(0.04, 0.04)):
        """Mask of points (N x 3, world [m]) outside the robot's inflated collision boxes at the given joints."""
        self.data.qpos[self.arm_qpos] = arm
        self.data.qpos[self.finger_qpos] = (fingers[0], -abs(fingers[1]))
        mujoco.mj_kinematics(self.model, self.data)
        keep = np.ones(len(points), bool)
        for g in self.geoms:
            centre, half = self.model.geom_aabb[g, :3], self.model.geom_aabb[g, 3:] + self.margin
            R = self.data.geom_xmat[g].reshape(3, 3)
            local = (points - self.data.geom_xpos[g]) @ R - centre
            keep &= ~np.all(np.abs(local) <= half, axis=1)
        return keep


class PoseEstimator:
    """Detects and tracks the known objects in multi-view RGB-D frames; poses in the world frame."""

    def __init__(self, models, config=EstimatorConfig(), robot_filter=None):
        self.models = {m.id: m for m in models}
        self.config, self.robot_filter = config, robot_filter
        self.previous = {}  # id -> Estimate
        self.predicted = {}  # id -> Estimate (confidence 0): held objects the cameras lost, moved with the grip
        self.table = config.table_height
        self.grip = self.grip_before = None  # grip-site pose at the last frame (tracking's motion prior)
        self.width = None  # finger opening at the last frame [m]
        self.rng = np.random.default_rng(config.seed)
        o3d.utility.random.seed(config.seed)

    # --- the scene cloud ------------------------------------------------------------------
    def scene_cloud(self, frames, arm=None, fingers=(0.04, 0.04), stride=1, table=None):
        """Fused, cropped, robot- and table-free points with colours; and the table height (fitted
        unless given)."""
        points, colours = zip(*(backproject(f, stride) for f in frames))
        points, colours = np.vstack(points), np.vstack(colours)
        (x0, x1), (y0, y1), (z0, z1) = self.config.workspace
        if table is not None:
            z0 = max(z0, table + self.config.table_margin)
        inside = (
            (points[:, 0] > x0)
            & (points[:, 0] < x1)
            & (points[:, 1] > y0)
            & (points[:, 1] < y1)
            & (points[:, 2] > z0)
            & (points[:, 2] < z1)
        )
        points, colours = points[inside], colours[inside]
        cloud = _pcd(points)
        cloud.colors = o3d.utility.Vector3dVector(colours)
        cloud = cloud.voxel_down_sample(self.config.voxel)
        points, colours = np.asarray(cloud.points), np.asarray(cloud.colors)
        if self.robot_filter is not None and arm is not None:
            keep = self.robot_filter.keep(points, arm, fingers)
            points, colours = points[keep], colours[keep]
        table = self._table_height(points) if table is None else table
        above = points[:, 2] > table + self.config.table_margin
        return points[above], colours[above], table

    def _table_height(self, points):
        low = points[points[:, 2] < self.config.table_height + 0.05]
        if len(low) > 500:
            plane, inliers = _pcd(low).segment_plane(self.config.table_margin / 2, 3, 200)
            normal = np.asarray(plane[:3])
            if abs(normal[2]) > 0.98 and len(inliers) > 0.3 * len(low):
                return float(np.median(low[inliers, 2]))
        return self.config.table_height

    # --- registration ---------------------------------------------------------------------
    def _score(self, model, points, colours, T):
        """(fitness, rmse, colour agreement) of points under object pose T (object -> world)."""
        local = (points - T[:3, 3]) @ T[:3, :3]
        distances, _ = model.tree.query(local, distance_upper_bound=self.config.fit_distance)
        inliers = np.isfinite(distances)
        fitness = float(inliers.mean()) if len(points) else 0.0
        rmse = float(np.sqrt(np.mean(distances[inliers] ** 2))) if inliers.any() else np.inf
        return (
            fitness,
            rmse,
            self._colour(model, colours[inliers] if inliers.any() else colours),
        )  # of the points it explains

    def _colour(self, model, colours):
        observed = _unit_colour(np.median(colours, axis=0)) if len(colours) else np.zeros(3)
        return float(self._agreement(model, observed))

    def _agreement(self, model, unit_colours):
        """Colour agreement in [0, 1] of unit rgb directions (..., 3) with the model's colour."""
        distance = np.sum((unit_colours - _unit_colour(model.color)) ** 2, axis=-1)
        return np.exp(-distance / (2 * self.config.colour_sigma**2))

    def _icp(self, model, source, T_init, distance):
        """Refine object pose T (object -> world) so the observed points lie on the model."""
        result = o3d.pipelines.registration.registration_icp(
            source,
            model.cloud,
            distance,
            np.linalg.inv(T_init),
            o3d.pipelines.registration.TransformationEstimationPointToPlane(),
            o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=40),
        )
        return np.linalg.inv(result.transformation)

    def _upright(self, model, points):
        """Initial object poses upright on the table at the cluster's principal yaw (eight turns,
        four for a symmetric object, one for an axial one), centred on the points' mean and on their
        box's middle (a view shows one side of an object; ICP can settle a bowl a centimetre off)."""
        centre = points.mean(axis=0)
        middle = 0.5 * (points.min(axis=0) + points.max(axis=0))
        xy = points[:, :2] - centre[:2]
        yaw = 0.5 * np.arctan2(2 * np.mean(xy[:, 0] * xy[:, 1]), np.mean(xy[:, 0] ** 2) - np.mean(xy[:, 1] ** 2))
        bases = (
            {self.table} if model.static else {self.table, max(points[:, 2].min() - 0.002, self.table)}
        )  # on the table or on something
        turns = 1 if model.symmetry == shapes.SYMMETRY_AXIAL else 4 if model.group[1:] else 8
        return [
            _transform(Rotation.from_euler('z', yaw + 2 * np.pi * k / turns).as_matrix(), (x, y, z))
            for x, y in {tuple(centre[:2]), tuple(middle[:2])}
            for z in bases
            for k in range(turns)
        ]

    def _planar(self, model, points):
        """Upright poses resting on the table or on something, one per yaw on a grid: the place of
        the best coarse fit among a grid of places around the points (a partial view's centroid can
        be far off the object's middle, and ICP from there slides a small object up its own side)."""
        half = float(max(model.extents[:2])) / 2
        step = float(np.clip(half / 3, 3 * self.config.voxel, 0.03))
        offsets = np.arange(-half, half + 1e-9, step)
        grid = np.stack(np.meshgrid(offsets, offsets), -1).reshape(-1, 2) + points[:, :2].mean(axis=0)
        turns = 1 if model.symmetry == shapes.SYMMETRY_AXIAL else 12 // _turns_onto_itself(model)  # ICP turns the rest
        starts = []
        for z in {self.table, max(points[:, 2].min() - 0.002, self.table)}:
            places = np.column_stack([grid, np.full(len(grid), z)])
            for yaw in 2 * np.pi * np.arange(turns) / turns:
                R = Rotation.from_euler('z', yaw).as_matrix()
                fitness = self._coarse_fitness(model, points, R, places, min(step, 0.015))
                starts.append(_transform(R, places[int(np.argmax(fitness))]))
        return starts

    def _coarse_fitness(self, model, points, R, places, distance):
        """Share of points within `distance` of the model at rotation R and each of `places`."""
        local = ((points[None] - places[:, None]) @ R).reshape(-1, 3)
        distances, _ = model.tree.query(local, distance_upper_bound=distance)
        return np.isfinite(distances).reshape(len(places), -1).mean(axis=1)

    def _starts(self, model, points):
        """Initial poses for ICP, the `icp_starts` best by a coarse fit of a sample of the points:
        upright ones at the points' principal yaw and the planar grid's."""
        rng = np.random.default_rng(self.config.seed)
        sample = points[rng.choice(len(points), min(len(points), 150), replace=False)]
        candidates = self._upright(model, points) + self._planar(model, sample[:60])
        distance = 2 * self.config.fit_distance
        fitness = [self._coarse_fitness(model, sample, T[:3, :3], T[None, :3, 3], distance)[0] for T in candidates]
        return [candidates[i] for i in np.argsort(fitness)[::-1][: self.config.icp_starts]]

    def _global(self, model, source):
        """An initial object pose from FPFH feature matching with RANSAC (any orientation)."""
        voxel = self.config.voxel
        result = o3d.pipelines.registration.registration_ransac_based_on_feature_matching(
            source,
            model.cloud,
            _fpfh(source, voxel),
            model.features,
            True,
            voxel * 2.5,
            o3d.pipelines.registration.TransformationEstimationPointToPoint(False),
            3,
            [
                o3d.pipelines.registration.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                o3d.pipelines.registration.CorrespondenceCheckerBasedOnDistance(voxel * 2.5),
            ],
            o3d.pipelines.registration.RANSACConvergenceCriteria(self.config.ransac_iterations, 0.999),
        )
        return [np.linalg.inv(result.transformation)] if result.fitness > 0 else []

    def register(self, model, points, colours, hypotheses=None):
        """Best (T, fitness, rmse, colour) of one object on a cluster: given hypotheses (tracking),
        else the best upright ones (_starts), and FPFH + RANSAC when none fits well."""
        source = _pcd(points)
        source.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=self.config.voxel * 2.5, max_nn=30))
        best = None

        def refine(initial):
            nonlocal best
            for T in initial:
                T = self._icp(model, source, T, self.config.fit_distance * 4)
                T = self._icp(model, source, T, self.config.fit_distance * 1.5)
                fitness, rmse, colour = self._score(model, points, colours, T)
                if best is None or fitness - 20 * rmse > best[1] - 20 * best[2]:
                    best = (T, fitness, rmse, colour)

        refine(hypotheses or self._starts(model, points))
        if hypotheses is None and best[1] < self.config.upright_enough and len(points) >= 30:
            refine(self._global(model, source))
        return best

    # --- detection and tracking -----------------------------------------------------------------
    def clusters(self, points):
        """DBSCAN clusters of points as index arrays, noise left out."""
        if len(points) == 0:
            return []
        labels = np.asarray(_pcd(points).cluster_dbscan(self.config.cluster_eps, self.config.cluster_min_points))
        return [np.nonzero(labels == k)[0] for k in range(labels.max() + 1)]

    def detect(self, frames, arm=None, fingers=(0.04, 0.04)):
        """Global detection of every known object in the frames: {id: Estimate} (only those found)."""
        points, colours, self.table = self.scene_cloud(frames, arm, fingers)
        found = {}
        pending = [(idx, 0) for idx in sorted(self.clusters(points), key=len, reverse=True)]  # largest first
        while pending:
            index, rounds = pending.pop(0)
            index = self._not_explained(found, points, index)
            candidates = [m for m in self.models.values() if m.id not in found]
            if not candidates or len(index) < self.config.cluster_min_points:
                continue
            own = {m.id: self._of_colour(m, index, colours) for m in candidates}
            colour_order = [
                m
                for m in sorted(candidates, key=lambda m: -self._colour(m, colours[index]))
                if self._plausible(m, points[own[m.id]], colours[own[m.id]])
            ][: self.config.max_candidates]
            if not colour_order:
                continue
            fits = {m.id: self.register(m, points[own[m.id]], colours[own[m.id]]) for m in colour_order}
            scored = {oid: f[1] * f[3] for oid, f in fits.items()}
            oid = max(scored, key=scored.get)
            T, fitness, rmse, colour = fits[oid]
            model = self.models[oid]
            if scored[oid] < self.config.min_confidence:
                # a mixed cluster: keep the points the best object explains, try the rest again
                if rounds < 2 and fitness * colour > 0.15:
                    self._accept(found, model, T, fitness, rmse, colour)
                    rest = self._unexplained(model, points[index], T)
                    pending.append((index[rest], rounds + 1))
                continue
            self._accept(found, model, T, fitness, rmse, colour)
            if rounds < 2:  # what it leaves over, as clusters of their own (a cube inside a drawer in a cabinet)
                rest = index[self._unexplained(model, points[index], T)]
                pending += [(rest[sub], rounds + 1) for sub in self.clusters(points[rest])]
        found = self._resolve(found)
        self.previous, self.predicted = dict(found), {}
        self._grip_motion(arm, fingers)
        return found

    def _of_colour(self, model, index, colours):
        """The cluster's points (index) whose colour could be the model's, or the whole cluster when
        too few are: a box standing on a rack is registered on its own colour, not pulled onto the
        rack. Dark points (shadow: their hue is noise) count for every object."""
        observed = colours[index]
        unit = observed / np.maximum(np.linalg.norm(observed, axis=1, keepdims=True), 1e-6)
        own = index[(self._agreement(model, unit) > self.config.min_colour) | (observed.max(axis=1) < self.config.dark)]
        return own if len(own) >= self.config.cluster_min_points else index

    def _plausible(self, model, points, colours):
        """Could this cluster be (part of) this object? Its colour must not contradict the object's,
        and it cannot be wider than the object (views only ever show less of it)."""
        span = np.ptp(points[:, :2], axis=0).max()
        diagonal = float(np.linalg.norm(model.extents))
        return self._colour(model, colours) > self.config.min_colour and span < diagonal + 0.02

    def _not_explained(self, found, points, index):
        """The cluster's points no accepted object explains (a view can split one object in two)."""
        for e in found.values():
            model = self.models[e.id]
            R = Rotation.from_quat([*e.quat[1:], e.quat[0]]).as_matrix()
            index = index[self._unexplained(model, points[index], _transform(R, e.position))]
        return index

    def _unexplained(self, model, points, T):
        local = (points - T[:3, 3]) @ T[:3, :3]
        distances, _ = model.tree.query(local)
        return np.nonzero(distances > self.config.fit_distance * 2)[0]

    def _accept(self, found, model, T, fitness, rmse, colour, tracked=False):
        if model.static:  # furniture stands upright on the table: keep only its yaw and place
            yaw = np.arctan2(T[1, 0], T[0, 0])
            T = _transform(Rotation.from_euler('z', yaw).as_matrix(), (T[0, 3], T[1, 3], self.table))
        R = self._canonical(model, T[:3, :3])
        position = _centre(model, T) - R @ [0, 0, model.extents[2] / 2]  # the same centre, canonical rotation
        estimate = Estimate(
            model.id,
            model.label,
            model.mesh_id,
            position,
            _wxyz(R),
            model.extents,
            model.symmetry,
            float(np.clip(fitness * colour, 0, 1)),
            fitness,
            rmse,
            tracked,
        )
        if model.id not in found or found[model.id].confidence < estimate.confidence:
            found[model.id] = estimate

    def _resolve(self, found):
        return {oid: e for oid, e in found.items() if e.confidence >= self.config.min_confidence * 0.6}

    def _canonical(self, model, R):
        """One representative of the rotations equivalent under the object's symmetry."""
        if model.symmetry == shapes.SYMMETRY_AXIAL:
            z = R[:, 2]
            axis = np.cross([0, 0, 1.0], z)
            angle = np.arctan2(np.linalg.norm(axis), z[2])
            return (
                Rotation.from_rotvec(axis / max(np.linalg.norm(axis), 1e-12) * angle).as_matrix()
                if np.linalg.norm(axis) > 1e-9
                else np.eye(3)
            )
        if model.group:
            reference = self.previous[model.id].quat if model.id in self.previous else None
            ref = np.eye(3) if reference is None else Rotation.from_quat([*reference[1:], reference[0]]).as_matrix()
            options = [R @ g for g in model.group]
            return min(options, key=lambda option: _angle(option, ref))
        return R

    def _grip_motion(self, arm, fingers):
        """The gripper's rigid motion (4x4) since the previous frame if it is closed on something
        and not opening (a release backs off while the fingers still touch: the object stays);
        remembers where the grip was (self.grip_before) for _in_grip."""
        if self.robot_filter is None or arm is None:
            return None
        position, rotation = self.robot_filter.grip_pose(arm)
        now = _transform(rotation, position)
        before, self.grip = self.grip, now
        width_before, self.width = self.width, float(sum(fingers))
        self.grip_before = None if before is None else before[:3, 3]
        opening = width_before is not None and self.width > width_before + 0.002
        if before is None or opening or not closed_on_something(self.width):
            return None
        return now @ np.linalg.inv(before)

    def _in_grip(self, poses):
        """Id of the object the fingers hold: of those (at their last poses) whose centre was within
        reach of the grip at the previous frame and that fit the fingers' opening (GRIP_SPAN_SLACK), the
        nearest (a parallel gripper holds one; the block a held sponge hovers over is not carried along;
        fingers closed on a cube's edge that slipped out are not around the cube)."""
        if self.grip_before is None:
            return None
        reach = {}
        for oid, T in poses.items():
            if self.models[oid].grip_span > self.width + GRIP_SPAN_SLACK:
                continue
            distance = np.linalg.norm(_centre(self.models[oid], T) - self.grip_before)
            if distance < max(self.models[oid].extents) / 2 + 0.02:
                reach[oid] = distance
        return min(reach, key=reach.get) if reach else None

    def _share_points(self, points, tree, poses):
        """{id: indices of the points near the object that lie nearer its surface (at its expected
        pose) than any other object's}: a sponge put on a block keeps the block's tracking off its
        top face."""
        nearest = np.full(len(points), np.inf)
        owner = np.full(len(points), -1)
        near = {}
        for k, (oid, T) in enumerate(poses.items()):
            model = self.models[oid]
            radius = float(np.linalg.norm(model.extents)) / 2 + 0.02
            near[oid] = np.asarray(tree.query_ball_point(_centre(model, T), radius) if tree is not None else [], int)
            distances, _ = model.tree.query((points[near[oid]] - T[:3, 3]) @ T[:3, :3])
            closer = distances < nearest[near[oid]]
            nearest[near[oid][closer]], owner[near[oid][closer]] = distances[closer], k
        return {oid: idx[owner[idx] == k] for k, (oid, idx) in enumerate(near.items())}

    def track(self, frames, arm=None, fingers=(0.04, 0.04)):
        """Warm-started update of the previous estimates; lost objects are searched globally.
        Returns {id: Estimate}; without previous estimates this is detect()."""
        if not self.previous:
            return self.detect(frames, arm, fingers)
        points, colours, _ = self.scene_cloud(frames, arm, fingers, self.config.track_stride, self.table)
        tree = cKDTree(points) if len(points) else None
        carried = self._grip_motion(arm, fingers)
        poses = {
            oid: _transform(Rotation.from_quat([*e.quat[1:], e.quat[0]]).as_matrix(), e.position)
            for oid, e in self.previous.items()
        }
        holding = self._in_grip(poses) if carried is not None else None
        found, lost, held = {}, [], {}
        if holding is not None:  # held: it moved with the gripper
            poses[holding] = T = carried @ poses[holding]
            held[holding] = replace(
                self.previous[holding], position=T[:3, 3], quat=_wxyz(T[:3, :3]), confidence=0.0, tracked=True
            )
        for oid, near in self._share_points(points, tree, poses).items():
            model, T = self.models[oid], poses[oid]
            if len(near) < self.config.track_min_points:
                lost.append(oid)
                continue
            fit = self.register(model, points[near], colours[near], hypotheses=[T])
            if fit[1] < self.config.resting_fitness and oid not in held:
                # e.g. a dropped box fits its bottom face to its own top face, one height too high
                fit = max(
                    fit,
                    self.register(model, points[near], colours[near], hypotheses=self._starts(model, points[near])),
                    key=lambda f: f[1] - 20 * f[2],
                )
            T, fitness, rmse, colour = fit
            if (
                fitness < self.config.lost_fitness or colour < self.config.lost_colour
            ):  # e.g. fitted to the object on top of it
                lost.append(oid)
                continue
            self._accept(found, model, T, fitness, rmse, colour, tracked=True)
        if lost:
            redetected = self.detect(frames, arm, fingers)
            # a held object stays in the closed fingers unless it is clearly seen elsewhere
            found.update(
                {
                    oid: redetected[oid]
                    for oid in lost
                    if oid in redetected
                    and (oid not in held or redetected[oid].confidence >= self.config.held_redetect_confidence)
                }
            )
        # a held object the hand hides is where the grip took it (rigid coupling), not where it was last seen
        self.predicted = {oid: e for oid, e in held.items() if oid not in found}
        self.previous = {**self.predicted, **found}
        return found


def _turns_onto_itself(model):
    """How many turns about the vertical map the object onto itself (a cube 4, a block 2, a shoe 1)."""
    return max(1, sum(np.allclose(R[:, 2], (0, 0, 1)) for R in model.group))


def _centre(model, T):
    """Centre of a model's bounding box under object pose T (frames sit at the bottom face)."""
    return T[:3, 3] + T[:3, :3] @ [0, 0, model.extents[2] / 2]


def _wxyz(R):
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z])


def _angle(A, B):
    return float(np.arccos(np.clip((np.trace(A.T @ B) - 1) / 2, -1.0, 1.0)))


def rotation_error(model, quat_est, quat_true):
    """Rotation error [rad] modulo the object's symmetry."""
    A = Rotation.from_quat([*quat_est[1:], quat_est[0]]).as_matrix()
    B = Rotation.from_quat([*quat_true[1:], quat_true[0]]).as_matrix()
    if model.symmetry == shapes.SYMMETRY_AXIAL:
        return float(np.arccos(np.clip(A[:, 2] @ B[:, 2], -1.0, 1.0)))
    if model.group:
        return min(_angle(A @ g, B) for g in model.group)
    return _angle(A, B)
