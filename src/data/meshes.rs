//! Triangle meshes: procedural built-in object classes and OBJ loading.
//!
//! Conventions shared with [`crate::data::render`]: y is up, and every built-in
//! class is modelled with its "front" facing +z, so a camera at azimuth 0 sees it
//! from the front. All meshes handed out by this module are normalized to fit the
//! unit sphere centred at the origin, so a given camera distance frames every
//! class the same way.

use std::f32::consts::{PI, TAU};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// An indexed triangle mesh. Winding is irrelevant (the renderer lights both sides).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[u32; 3]>,
}

impl Mesh {
    /// Axis-aligned box spanning `min`..`max`.
    pub fn cuboid(min: [f32; 3], max: [f32; 3]) -> Mesh {
        let [x0, y0, z0] = min;
        let [x1, y1, z1] = max;
        let vertices = vec![
            [x0, y0, z0],
            [x1, y0, z0],
            [x1, y1, z0],
            [x0, y1, z0],
            [x0, y0, z1],
            [x1, y0, z1],
            [x1, y1, z1],
            [x0, y1, z1],
        ];
        let quads = [
            [0, 3, 2, 1],
            [4, 5, 6, 7],
            [0, 4, 7, 3],
            [1, 2, 6, 5],
            [0, 1, 5, 4],
            [3, 7, 6, 2],
        ];
        let mut triangles = Vec::with_capacity(12);
        for [a, b, c, d] in quads {
            triangles.push([a, b, c]);
            triangles.push([a, c, d]);
        }
        Mesh {
            vertices,
            triangles,
        }
    }

    /// Box of size `size` centred at `center`.
    pub fn box_at(center: [f32; 3], size: [f32; 3]) -> Mesh {
        let h = [size[0] / 2.0, size[1] / 2.0, size[2] / 2.0];
        Mesh::cuboid(
            [center[0] - h[0], center[1] - h[1], center[2] - h[2]],
            [center[0] + h[0], center[1] + h[1], center[2] + h[2]],
        )
    }

    /// Truncated cone around the y axis from `y0` (radius `r0`) to `y1` (radius `r1`),
    /// with flat caps. A zero radius collapses that end to a single apex vertex.
    pub fn frustum(r0: f32, r1: f32, y0: f32, y1: f32, segments: u32) -> Mesh {
        let n = segments.max(3);
        let mut m = Mesh::default();
        // Each end is either a ring of n vertices or one apex vertex.
        let ring = |m: &mut Mesh, r: f32, y: f32| -> Vec<u32> {
            if r <= 0.0 {
                m.vertices.push([0.0, y, 0.0]);
                return vec![m.vertices.len() as u32 - 1; n as usize];
            }
            (0..n)
                .map(|i| {
                    let a = TAU * i as f32 / n as f32;
                    m.vertices.push([r * a.cos(), y, r * a.sin()]);
                    m.vertices.len() as u32 - 1
                })
                .collect()
        };
        let bottom = ring(&mut m, r0, y0);
        let top = ring(&mut m, r1, y1);
        let n = n as usize;
        for i in 0..n {
            let j = (i + 1) % n;
            if r0 > 0.0 {
                m.triangles.push([bottom[i], bottom[j], top[j]]);
            }
            if r1 > 0.0 {
                m.triangles.push([bottom[i], top[j], top[i]]);
            }
        }
        for (r, y, idx) in [(r0, y0, &bottom), (r1, y1, &top)] {
            if r > 0.0 {
                m.vertices.push([0.0, y, 0.0]);
                let c = m.vertices.len() as u32 - 1;
                for i in 0..n {
                    m.triangles.push([c, idx[i], idx[(i + 1) % n]]);
                }
            }
        }
        m
    }

    /// Closed cylinder around the y axis.
    pub fn cylinder(radius: f32, y0: f32, y1: f32, segments: u32) -> Mesh {
        Mesh::frustum(radius, radius, y0, y1, segments)
    }

    /// Cone around the y axis: base of `radius` at `y0`, apex at `y1`.
    pub fn cone(radius: f32, y0: f32, y1: f32, segments: u32) -> Mesh {
        Mesh::frustum(radius, 0.0, y0, y1, segments)
    }

    /// Partial torus in the xy plane centred at the origin: a tube of radius `minor`
    /// following a circle of radius `major`, for angles `a0..a1` (radians, measured
    /// from +x towards +y). Used for handles; the open ends are left uncapped since
    /// they are meant to be buried inside another part.
    pub fn torus_arc(major: f32, minor: f32, a0: f32, a1: f32, segments: u32, sides: u32) -> Mesh {
        let (segs, sides) = (segments.max(1), sides.max(3));
        let mut m = Mesh::default();
        for i in 0..=segs {
            let a = a0 + (a1 - a0) * i as f32 / segs as f32;
            let (ca, sa) = (a.cos(), a.sin());
            for k in 0..sides {
                let b = TAU * k as f32 / sides as f32;
                let r = major + minor * b.cos();
                m.vertices.push([r * ca, r * sa, minor * b.sin()]);
            }
        }
        for i in 0..segs {
            for k in 0..sides {
                let k1 = (k + 1) % sides;
                let (p, q) = (i * sides, (i + 1) * sides);
                m.triangles.push([p + k, q + k, q + k1]);
                m.triangles.push([p + k, q + k1, p + k1]);
            }
        }
        m
    }

    /// Prism extruded along y from a polygon in the xz plane that is star-shaped
    /// with respect to its vertex centroid (convex polygons and stars qualify); caps
    /// are triangle fans from that centroid.
    pub fn prism(outline: &[[f32; 2]], y0: f32, y1: f32) -> Mesh {
        let n = outline.len();
        let mut m = Mesh::default();
        if n < 3 {
            return m;
        }
        let cx = outline.iter().map(|p| p[0]).sum::<f32>() / n as f32;
        let cz = outline.iter().map(|p| p[1]).sum::<f32>() / n as f32;
        for &y in &[y0, y1] {
            for p in outline {
                m.vertices.push([p[0], y, p[1]]);
            }
        }
        m.vertices.push([cx, y0, cz]);
        m.vertices.push([cx, y1, cz]);
        let (n32, c0, c1) = (n as u32, 2 * n as u32, 2 * n as u32 + 1);
        for i in 0..n32 {
            let j = (i + 1) % n32;
            m.triangles.push([i, j, n32 + j]);
            m.triangles.push([i, n32 + j, n32 + i]);
            m.triangles.push([c0, j, i]);
            m.triangles.push([c1, n32 + i, n32 + j]);
        }
        m
    }

    /// Applies `f` to every vertex.
    pub fn map(mut self, f: impl Fn([f32; 3]) -> [f32; 3]) -> Mesh {
        for v in &mut self.vertices {
            *v = f(*v);
        }
        self
    }

    pub fn translated(self, t: [f32; 3]) -> Mesh {
        self.map(|[x, y, z]| [x + t[0], y + t[1], z + t[2]])
    }

    pub fn scaled(self, s: [f32; 3]) -> Mesh {
        self.map(|[x, y, z]| [x * s[0], y * s[1], z * s[2]])
    }

    /// Rotation about +x by `deg` (right-handed: y towards z).
    pub fn rotated_x(self, deg: f32) -> Mesh {
        let (s, c) = deg.to_radians().sin_cos();
        self.map(|[x, y, z]| [x, c * y - s * z, s * y + c * z])
    }

    /// Rotation about +y by `deg` (right-handed: z towards x, i.e. counter-clockwise
    /// seen from above — the same sense as the camera azimuth).
    pub fn rotated_y(self, deg: f32) -> Mesh {
        let (s, c) = deg.to_radians().sin_cos();
        self.map(|[x, y, z]| [c * x + s * z, y, -s * x + c * z])
    }

    /// Rotation about +z by `deg` (right-handed: x towards y).
    pub fn rotated_z(self, deg: f32) -> Mesh {
        let (s, c) = deg.to_radians().sin_cos();
        self.map(|[x, y, z]| [c * x - s * y, s * x + c * y, z])
    }

    /// Appends `other`'s geometry (indices are rebased).
    pub fn merge(&mut self, other: &Mesh) {
        let base = self.vertices.len() as u32;
        self.vertices.extend_from_slice(&other.vertices);
        self.triangles.extend(
            other
                .triangles
                .iter()
                .map(|t| [t[0] + base, t[1] + base, t[2] + base]),
        );
    }

    /// Union of several parts into one mesh.
    pub fn combine(parts: impl IntoIterator<Item = Mesh>) -> Mesh {
        let mut m = Mesh::default();
        for p in parts {
            m.merge(&p);
        }
        m
    }

    /// Axis-aligned bounds `(min, max)`; `None` for a mesh without vertices.
    pub fn bounds(&self) -> Option<([f32; 3], [f32; 3])> {
        let first = *self.vertices.first()?;
        let (mut lo, mut hi) = (first, first);
        for v in &self.vertices {
            for k in 0..3 {
                lo[k] = lo[k].min(v[k]);
                hi[k] = hi[k].max(v[k]);
            }
        }
        Some((lo, hi))
    }

    /// Largest distance of any vertex from the origin.
    pub fn bounding_radius(&self) -> f32 {
        self.vertices
            .iter()
            .map(|v| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt())
            .fold(0.0, f32::max)
    }

    /// Centres the bounding box at the origin and scales uniformly so that the
    /// farthest vertex lies on the unit sphere. Degenerate (single-point or empty)
    /// meshes are only centred.
    pub fn normalized(self) -> Mesh {
        let Some((lo, hi)) = self.bounds() else {
            return self;
        };
        let c = [
            (lo[0] + hi[0]) / 2.0,
            (lo[1] + hi[1]) / 2.0,
            (lo[2] + hi[2]) / 2.0,
        ];
        let m = self.translated([-c[0], -c[1], -c[2]]);
        let r = m.bounding_radius();
        if r > 0.0 && r.is_finite() {
            // Slightly under 1 so that rounding never pushes a vertex outside.
            let s = 0.9999 / r;
            m.scaled([s, s, s])
        } else {
            m
        }
    }

    /// Checks indices are in range and coordinates finite.
    pub fn validate(&self) -> Result<()> {
        if self.triangles.is_empty() {
            bail!("mesh has no triangles");
        }
        let n = self.vertices.len() as u32;
        if let Some(t) = self.triangles.iter().find(|t| t.iter().any(|&i| i >= n)) {
            bail!("triangle {t:?} references a vertex beyond the {n} vertices");
        }
        if self.vertices.iter().flatten().any(|x| !x.is_finite()) {
            bail!("mesh has non-finite vertex coordinates");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Built-in classes
// ---------------------------------------------------------------------------

/// Built-in classes and their rotational symmetry order about the vertical axis:
/// 1 = none (every azimuth looks different), n = n-fold (azimuth is only
/// identifiable modulo 360/n degrees), 0 = continuous (azimuth not identifiable).
const CLASSES: &[(&str, u32)] = &[
    ("chair", 1),
    ("table", 2),
    ("lblock", 1),
    ("arrow", 1),
    ("mug", 1),
    ("car", 1),
    ("plane", 1),
    ("lamp", 1),
    ("house", 1),
    ("stool", 3),
    ("pyramid", 4),
    ("star", 5),
    ("cone", 0),
];

/// Names and vertical-axis symmetry orders of the built-in classes, in a fixed order.
pub fn builtin_classes() -> Vec<(&'static str, u32)> {
    CLASSES.to_vec()
}

/// The normalized mesh of a built-in class, or `None` for an unknown name.
pub fn builtin_mesh(name: &str) -> Option<Mesh> {
    let m = match name {
        "chair" => chair(),
        "table" => table(),
        "lblock" => lblock(),
        "arrow" => arrow(),
        "mug" => mug(),
        "car" => car(),
        "plane" => plane(),
        "lamp" => lamp(),
        "house" => house(),
        "stool" => stool(),
        "pyramid" => pyramid(),
        "star" => star(),
        "cone" => Mesh::cone(1.0, 0.0, 1.6, 48),
        _ => return None,
    };
    Some(m.normalized())
}

/// Seat, four legs and a backrest at the back (-z).
fn chair() -> Mesh {
    let mut parts = vec![
        Mesh::box_at([0.0, 1.0, 0.0], [1.0, 0.12, 1.0]),
        Mesh::box_at([0.0, 1.53, -0.45], [1.0, 0.94, 0.1]),
    ];
    for (x, z) in [(-0.42, -0.42), (0.42, -0.42), (-0.42, 0.42), (0.42, 0.42)] {
        parts.push(Mesh::box_at([x, 0.47, z], [0.1, 0.94, 0.1]));
    }
    Mesh::combine(parts)
}

/// Long rectangular top along x, four legs: 2-fold symmetric.
fn table() -> Mesh {
    let mut parts = vec![Mesh::box_at([0.0, 0.8, 0.0], [2.2, 0.1, 1.1])];
    for (x, z) in [(-0.95, -0.4), (0.95, -0.4), (-0.95, 0.4), (0.95, 0.4)] {
        parts.push(Mesh::box_at([x, 0.375, z], [0.12, 0.75, 0.12]));
    }
    Mesh::combine(parts)
}

/// A long low bar along x with an upright block on its +x end.
fn lblock() -> Mesh {
    Mesh::combine([
        Mesh::cuboid([-1.0, 0.0, -0.35], [1.0, 0.5, 0.35]),
        Mesh::cuboid([0.35, 0.5, -0.35], [1.0, 1.5, 0.35]),
    ])
}

/// A thick flat arrow lying on the ground, pointing towards +x.
fn arrow() -> Mesh {
    Mesh::combine([
        Mesh::cuboid([-1.0, 0.0, -0.18], [0.2, 0.3, 0.18]),
        Mesh::prism(&[[0.2, -0.5], [0.2, 0.5], [1.0, 0.0]], 0.0, 0.3),
    ])
}

/// A cylindrical mug with a handle on its +x side.
fn mug() -> Mesh {
    Mesh::combine([
        Mesh::cylinder(0.5, 0.0, 1.2, 40),
        Mesh::torus_arc(0.3, 0.07, -PI / 2.0, PI / 2.0, 16, 10).translated([0.5, 0.6, 0.0]),
    ])
}

/// Body, cabin set towards the back (-z), four wheels; the front faces +z.
fn car() -> Mesh {
    let mut parts = vec![
        Mesh::box_at([0.0, 0.45, 0.0], [1.0, 0.45, 2.2]),
        Mesh::box_at([0.0, 0.88, -0.3], [0.9, 0.42, 1.0]),
    ];
    for (x, z) in [(-0.5, -0.7), (0.5, -0.7), (-0.5, 0.7), (0.5, 0.7)] {
        // Wheel axis along x: a y-axis cylinder rotated onto x.
        let wheel = Mesh::cylinder(0.24, -0.09, 0.09, 20).rotated_z(90.0);
        parts.push(wheel.translated([x, 0.24, z]));
    }
    Mesh::combine(parts)
}

/// Fuselage along z with the nose towards +z, wings, tailplane and a tail fin.
fn plane() -> Mesh {
    // Build along +y, then tip it forward so +y becomes +z.
    let fuselage = Mesh::combine([
        Mesh::cylinder(0.16, -1.0, 0.8, 20),
        Mesh::cone(0.16, 0.8, 1.15, 20),
        Mesh::cone(0.16, -1.0, -1.2, 20),
    ])
    .rotated_x(90.0);
    Mesh::combine([
        fuselage,
        Mesh::prism(
            &[
                [-1.1, -0.05],
                [-1.1, -0.3],
                [0.0, -0.25],
                [1.1, -0.3],
                [1.1, -0.05],
                [0.0, 0.25],
            ],
            -0.03,
            0.03,
        ),
        Mesh::box_at([0.0, 0.05, -0.95], [0.8, 0.05, 0.22]),
        Mesh::prism(
            &[[-0.02, -1.1], [-0.02, -0.75], [0.02, -0.75], [0.02, -1.1]],
            0.0,
            0.5,
        )
        .map(|[x, y, z]| [x, y, z - 0.25 * y]),
    ])
}

/// Round base, vertical pole, an arm bent towards +x and a conical shade hanging down.
fn lamp() -> Mesh {
    Mesh::combine([
        Mesh::cylinder(0.4, 0.0, 0.08, 32),
        Mesh::box_at([0.0, 0.75, 0.0], [0.08, 1.4, 0.08]),
        // Arm from the pole top (0, 1.45) tilted 60° towards +x, ending near (0.61, 1.8).
        Mesh::box_at([0.0; 3], [0.08, 0.78, 0.08])
            .rotated_z(-60.0)
            .translated([0.303, 1.625, 0.0]),
        Mesh::box_at([0.606, 1.7, 0.0], [0.05, 0.22, 0.05]),
        Mesh::frustum(0.34, 0.1, 1.2, 1.6, 28).translated([0.606, 0.0, 0.0]),
    ])
}

/// Box with a gable roof (ridge along x) and a chimney on one side.
fn house() -> Mesh {
    // Triangular cross-section drawn in the xz plane, then axes permuted so the
    // profile lies in the zy plane and the extrusion runs along x.
    let roof = Mesh::prism(&[[-0.78, 0.0], [0.78, 0.0], [0.0, 0.6]], -1.0, 1.0)
        .map(|[x, y, z]| [y, z + 0.9, x]);
    Mesh::combine([
        Mesh::cuboid([-0.9, 0.0, -0.65], [0.9, 0.9, 0.65]),
        roof,
        Mesh::box_at([0.5, 1.35, -0.3], [0.2, 0.6, 0.2]),
        // Door on the front side makes front and back distinct.
        Mesh::box_at([-0.3, 0.3, 0.66], [0.3, 0.6, 0.04]),
    ])
}

/// Round seat on three splayed legs: 3-fold symmetric.
fn stool() -> Mesh {
    let mut parts = vec![Mesh::cylinder(0.6, 1.0, 1.14, 36)];
    for k in 0..3 {
        let leg = Mesh::box_at([0.0, 0.5, 0.0], [0.1, 1.02, 0.1])
            .map(|[x, y, z]| [x + 0.2 * (1.0 - y), y, z])
            .translated([0.35, 0.0, 0.0])
            .rotated_y(120.0 * k as f32 + 90.0);
        parts.push(leg);
    }
    Mesh::combine(parts)
}

/// Square-based pyramid: 4-fold symmetric.
fn pyramid() -> Mesh {
    Mesh::frustum(1.0, 0.0, 0.0, 1.2, 4).rotated_y(45.0)
}

/// Five-pointed star prism standing on its base: 5-fold symmetric.
fn star() -> Mesh {
    let outline: Vec<[f32; 2]> = (0..10)
        .map(|i| {
            let r = if i % 2 == 0 { 1.0 } else { 0.45 };
            let a = TAU * i as f32 / 10.0 + PI / 2.0;
            [r * a.cos(), r * a.sin()]
        })
        .collect();
    Mesh::prism(&outline, 0.0, 0.5)
}

// ---------------------------------------------------------------------------
// Orientation
// ---------------------------------------------------------------------------

/// A signed coordinate axis (`+y`, `-z`, …; the `+` may be left out), to say which way a
/// mesh file's up and front point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    /// 0 = x, 1 = y, 2 = z.
    index: usize,
    negative: bool,
}

impl Axis {
    /// +y: up in our meshes (and ShapeNet's, Blender's OBJ export).
    pub const UP: Axis = Axis { index: 1, negative: false };
    /// +z: the front of our meshes, seen from the camera at azimuth 0.
    pub const FRONT: Axis = Axis { index: 2, negative: false };

    fn vector(self) -> [f32; 3] {
        let mut v = [0.0; 3];
        v[self.index] = if self.negative { -1.0 } else { 1.0 };
        v
    }
}

impl std::str::FromStr for Axis {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (negative, name) = match s.trim() {
            t if t.starts_with('-') => (true, &t[1..]),
            t => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "x" => 0,
            "y" => 1,
            "z" => 2,
            _ => return Err(format!("{s:?} is not an axis; use +x, -x, +y, -y, +z or -z")),
        };
        Ok(Axis { index, negative })
    }
}

impl std::fmt::Display for Axis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", if self.negative { '-' } else { '+' }, ["x", "y", "z"][self.index])
    }
}

impl Mesh {
    /// Turns a mesh whose up is `up` and whose front faces `front` so that up is +y and
    /// the front faces +z, as ours (a rotation: never mirrored).
    pub fn oriented(self, up: Axis, front: Axis) -> Result<Mesh> {
        if up.index == front.index {
            bail!("up ({up}) and front ({front}) must be different axes");
        }
        let (u, f) = (up.vector(), front.vector());
        // Rows: the source directions that become +x (= y × z), +y and +z.
        let right = [u[1] * f[2] - u[2] * f[1], u[2] * f[0] - u[0] * f[2], u[0] * f[1] - u[1] * f[0]];
        let dot = |a: [f32; 3], v: [f32; 3]| a[0] * v[0] + a[1] * v[1] + a[2] * v[2];
        Ok(self.map(|v| [dot(right, v), dot(u, v), dot(f, v)]))
    }
}

// ---------------------------------------------------------------------------
// OBJ loading
// ---------------------------------------------------------------------------

/// Loads an OBJ file (all objects/groups merged, polygons triangulated),
/// normalized to the unit sphere. Materials and textures are ignored, and so are
/// bytes that are not UTF-8 (exporters write names and comments in local code pages).
// The `as f32` casts matter when tobj's `use_f64` feature is on.
#[allow(clippy::unnecessary_cast)]
pub fn load_obj(path: impl AsRef<Path>) -> Result<Mesh> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read OBJ file {}", path.display()))?;
    // `..Default::default()` keeps this compiling when tobj's optional features add fields.
    #[allow(clippy::needless_update)]
    let opts = tobj::LoadOptions {
        triangulate: true,
        single_index: true,
        ignore_points: true,
        ignore_lines: true,
        ..Default::default()
    };
    let text = String::from_utf8_lossy(&bytes);
    // Materials are never read: a missing .mtl beside the file (common) is no error.
    let (models, _materials) = tobj::load_obj_buf(&mut text.as_bytes(), &opts, |_| {
        Err(tobj::LoadError::OpenFileFailed)
    })
    .map_err(|e| anyhow::anyhow!("failed to load OBJ file {}: {e}", path.display()))?;
    let mut mesh = Mesh::default();
    for model in &models {
        let m = &model.mesh;
        let vertices = m
            .positions
            .chunks_exact(3)
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect();
        let triangles = m
            .indices
            .chunks_exact(3)
            .map(|t| [t[0], t[1], t[2]])
            .collect();
        mesh.merge(&Mesh {
            vertices,
            triangles,
        });
    }
    mesh.validate()
        .with_context(|| format!("invalid OBJ file {}", path.display()))?;
    Ok(mesh.normalized())
}

fn is_obj(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("obj"))
}

/// Names skipped when looking for meshes: hidden files and folders, and the resource
/// forks macOS puts in zip files (`__MACOSX/._model.obj` is not an OBJ file).
fn is_skipped(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with('.') || n == "__MACOSX")
}

/// Sorted entries of a directory (sorted so results do not depend on the filesystem),
/// without the skipped names.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read mesh directory {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot read mesh directory {}", dir.display()))?
            .path();
        if !is_skipped(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Deepest folder level searched below a class folder; ShapeNet needs 2
/// (`<model>/models/`), and a limit keeps a symlink loop from running forever.
const MAX_MESH_DEPTH: usize = 8;

/// Appends the OBJ files anywhere below `dir` (sorted, depth-first) to `out`.
fn find_obj_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if is_obj(&path) {
            out.push(path);
        } else if path.is_dir() && depth < MAX_MESH_DEPTH {
            find_obj_files(&path, depth + 1, out)?;
        }
    }
    Ok(())
}

/// Class names end up in directory names and CSV cells.
fn check_class_name(name: &str, origin: &Path) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name
            .chars()
            .any(|c| matches!(c, ',' | '"' | '\n' | '\r' | '/' | '\\'))
    {
        bail!(
            "unusable class name {name:?} (from {}): class names must be non-empty, not start with '.', \
             and contain no commas, quotes, newlines or path separators",
            origin.display()
        );
    }
    Ok(())
}

/// A class of a mesh directory: its name and its OBJ files, one per instance.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshClass {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// The folder (or file stem) it came from, when the name differs: a ShapeNet synset id.
    pub synset: Option<String>,
}

/// ShapeNetCore's categories (v1 and v2) by WordNet synset id, named as ShapeNet's taxonomy
/// names them (first name, spaces as underscores), so `03001627/` renders as class `chair`.
const SHAPENET_SYNSETS: [(&str, &str); 57] = [
    ("02691156", "airplane"), ("02747177", "trash_bin"), ("02773838", "bag"), ("02801938", "basket"),
    ("02808440", "bathtub"), ("02818832", "bed"), ("02828884", "bench"), ("02834778", "bicycle"),
    ("02843684", "birdhouse"), ("02858304", "boat"), ("02871439", "bookshelf"), ("02876657", "bottle"),
    ("02880940", "bowl"), ("02924116", "bus"), ("02933112", "cabinet"), ("02942699", "camera"),
    ("02946921", "can"), ("02954340", "cap"), ("02958343", "car"), ("02992529", "cellphone"),
    ("03001627", "chair"), ("03046257", "clock"), ("03085013", "keyboard"), ("03207941", "dishwasher"),
    ("03211117", "display"), ("03261776", "earphone"), ("03325088", "faucet"), ("03337140", "file_cabinet"),
    ("03467517", "guitar"), ("03513137", "helmet"), ("03593526", "jar"), ("03624134", "knife"),
    ("03636649", "lamp"), ("03642806", "laptop"), ("03691459", "loudspeaker"), ("03710193", "mailbox"),
    ("03759954", "microphone"), ("03761084", "microwave"), ("03790512", "motorbike"), ("03797390", "mug"),
    ("03928116", "piano"), ("03938244", "pillow"), ("03948459", "pistol"), ("03991062", "flowerpot"),
    ("04004475", "printer"), ("04074963", "remote"), ("04090263", "rifle"), ("04099429", "rocket"),
    ("04225987", "skateboard"), ("04256520", "sofa"), ("04330267", "stove"), ("04379243", "table"),
    ("04401088", "telephone"), ("04460130", "tower"), ("04468005", "train"), ("04530566", "watercraft"),
    ("04554684", "washer"),
];

/// ShapeNet's name for a synset-id folder name (`03001627` → `chair`).
pub fn shapenet_name(synset: &str) -> Option<&'static str> {
    SHAPENET_SYNSETS.iter().find(|(id, _)| *id == synset).map(|(_, name)| *name)
}

/// Finds the classes of a directory of OBJ meshes, without loading them (a ShapeNet
/// class has thousands; [`load_obj`] loads one when it is needed). Two layouts, which
/// may be mixed:
/// - `dir/<class>.obj`: one mesh per class, named after the file stem;
/// - `dir/<class>/…/*.obj`: every OBJ anywhere below the subfolder is an instance of
///   `<class>`, so ShapeNet's `<synset>/<model>/models/model_normalized.obj` (v2) and
///   `<synset>/<model>/model.obj` (v1) work as they are.
///
/// Hidden files and folders are skipped, and so are subfolders without OBJ files. A folder
/// named with a ShapeNetCore synset id takes ShapeNet's name for it (`03001627` → `chair`;
/// the id is kept in [`MeshClass::synset`]). Classes come back sorted by name, their files
/// sorted by path. `dir` may also be one OBJ file: one class, named after the file.
pub fn find_mesh_classes(dir: impl AsRef<Path>) -> Result<Vec<MeshClass>> {
    let dir = dir.as_ref();
    // One OBJ file given instead of a folder: one class, named after it.
    if is_obj(dir) {
        let name = dir.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        check_class_name(&name, dir)?;
        return Ok(vec![MeshClass { name, files: vec![dir.to_path_buf()], synset: None }]);
    }
    if !dir.is_dir() {
        bail!(
            "mesh directory {} does not exist or is not a directory (nor an .obj file)",
            dir.display()
        );
    }
    let mut classes: Vec<MeshClass> = Vec::new();
    for path in sorted_entries(dir)? {
        let name = || {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let class = if is_obj(&path) {
            MeshClass { name: name(), files: vec![path.clone()], synset: None }
        } else if path.is_dir() {
            let mut files = Vec::new();
            find_obj_files(&path, 1, &mut files)?;
            if files.is_empty() {
                continue;
            }
            let folder = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match shapenet_name(&folder) {
                Some(name) => MeshClass { name: name.to_string(), files, synset: Some(folder) },
                None => MeshClass { name: folder, files, synset: None },
            }
        } else {
            continue;
        };
        check_class_name(&class.name, &path)?;
        if let Some(c) = classes.iter().find(|c| c.name == class.name) {
            let name = &c.name;
            match c.synset.as_ref().or(class.synset.as_ref()) {
                Some(id) => bail!("class {name:?} is defined twice in {}: by ShapeNet's folder {id}/ and by {name}", dir.display()),
                None => bail!("class {name:?} is defined twice in {} (both as {name}.obj and as a {name}/ folder?)", dir.display()),
            }
        }
        classes.push(class);
    }
    if classes.is_empty() {
        bail!(
            "no .obj files found in {} (expected {0}/<class>.obj or {0}/<class>/…/*.obj)",
            dir.display()
        );
    }
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, unique scratch directory under the system temp dir.
    fn scratch(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "preimage-meshes-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const TETRA: &str =
        "# tetrahedron\nv 0 0 0\nv 2 0 0\nv 0 2 0\nv 0 0 2\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n";

    #[test]
    fn builtin_meshes_are_valid_and_normalized() {
        let classes = builtin_classes();
        assert!(classes.len() >= 10);
        assert!(classes.iter().filter(|c| c.1 == 1).count() >= 6);
        for (name, _) in classes {
            let m = builtin_mesh(name).unwrap();
            m.validate().unwrap();
            let r = m.bounding_radius();
            assert!(r <= 1.0 && r > 0.99, "{name}: radius {r}");
            let (lo, hi) = m.bounds().unwrap();
            for k in 0..3 {
                assert!((lo[k] + hi[k]).abs() < 1e-4, "{name}: not centred");
            }
        }
        assert!(builtin_mesh("nope").is_none());
    }

    #[test]
    fn transforms_and_merge() {
        let a = Mesh::cuboid([0.0; 3], [1.0; 3]);
        let mut b = a.clone();
        b.merge(&a.clone().translated([2.0, 0.0, 0.0]));
        assert_eq!(b.vertices.len(), 16);
        assert_eq!(b.triangles.len(), 24);
        assert!(b.triangles[12..].iter().all(|t| t.iter().all(|&i| i >= 8)));
        let r = Mesh {
            vertices: vec![[1.0, 0.0, 0.0]],
            triangles: vec![],
        }
        .rotated_y(90.0);
        // Rotating about +y by 90° takes +x to -z (and +z to +x).
        assert!((r.vertices[0][2] + 1.0).abs() < 1e-6 && r.vertices[0][0].abs() < 1e-6);
    }

    #[test]
    fn load_obj_file_and_dirs() {
        let d = scratch("obj");
        let f = d.join("tetra.obj");
        std::fs::write(&f, TETRA).unwrap();
        let m = load_obj(&f).unwrap();
        assert_eq!(m.triangles.len(), 4);
        assert!(m.bounding_radius() <= 1.0);

        // Flat layout plus folder layout.
        std::fs::create_dir_all(d.join("pyr")).unwrap();
        std::fs::write(d.join("pyr/a.obj"), TETRA).unwrap();
        std::fs::write(
            d.join("pyr/b.OBJ"),
            "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.join("empty")).unwrap();
        let classes = find_mesh_classes(&d).unwrap();
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pyr", "tetra"]);
        assert_eq!(classes[0].files, [d.join("pyr/a.obj"), d.join("pyr/b.OBJ")]);
        assert_eq!(load_obj(&classes[0].files[1]).unwrap().triangles.len(), 2, "quad is triangulated");

        assert_eq!(find_mesh_classes(&f).unwrap(), [MeshClass { name: "tetra".into(), files: vec![f.clone()], synset: None }]);
        let err = find_mesh_classes(d.join("empty")).unwrap_err().to_string();
        assert!(err.contains("no .obj files"), "{err}");
        let bad = d.join("bad.obj");
        std::fs::write(&bad, "v 0 0 0\nf 1 2 3\n").unwrap();
        let err = format!("{:#}", load_obj(&bad).unwrap_err());
        assert!(err.contains("bad.obj"), "{err}");
        let err = format!("{:#}", load_obj(d.join("missing.obj")).unwrap_err());
        assert!(err.contains("missing.obj"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shapenet_layout_is_found_and_its_files_load() {
        // ShapeNetCore v2: <synset>/<model>/models/model_normalized.obj beside a .mtl and
        // textures; v1: <synset>/<model>/model.obj. Zip files made on macOS add __MACOSX/.
        let d = scratch("shapenet");
        let with_mtl = format!("mtllib model_normalized.mtl\no part\nusemtl wood\n{TETRA}");
        for (rel, text) in [
            ("03001627/1a2b/models/model_normalized.obj", with_mtl.as_str()),
            ("03001627/0c9d/models/model_normalized.obj", with_mtl.as_str()),
            ("03001627/0c9d/images/texture0.jpg", "not a mesh"),
            ("04379243/77ee/model.obj", TETRA),
            ("__MACOSX/04379243/77ee/._model.obj", "\0\x05\x16\x07"),
            ("04379243/.cache/old.obj", TETRA),
        ] {
            let p = d.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let classes = find_mesh_classes(&d).unwrap();
        assert_eq!(
            classes,
            [
                MeshClass {
                    name: "chair".into(),
                    files: vec![
                        d.join("03001627/0c9d/models/model_normalized.obj"),
                        d.join("03001627/1a2b/models/model_normalized.obj"),
                    ],
                    synset: Some("03001627".into()),
                },
                MeshClass { name: "table".into(), files: vec![d.join("04379243/77ee/model.obj")], synset: Some("04379243".into()) },
            ]
        );
        // The .mtl is missing: materials are not read, so that is no error.
        assert_eq!(load_obj(&classes[0].files[0]).unwrap().triangles.len(), 4);
        // Bytes that are not UTF-8 in names and comments (an exporter's code page).
        let latin1 = d.join("latin1.obj");
        std::fs::write(&latin1, [b"# Stuhl f\xfcr K\xfcche\no St\xfchl\n".as_slice(), TETRA.as_bytes()].concat()).unwrap();
        assert_eq!(load_obj(&latin1).unwrap().triangles.len(), 4);
        // A synset folder beside a folder of the name ShapeNet gives it: the error names both.
        std::fs::create_dir_all(d.join("chair")).unwrap();
        std::fs::write(d.join("chair/x.obj"), TETRA).unwrap();
        let err = find_mesh_classes(&d).unwrap_err().to_string();
        assert!(err.contains("\"chair\" is defined twice") && err.contains("03001627/"), "{err}");
        // Folders that only look like ids keep their names.
        assert_eq!(shapenet_name("03001627"), Some("chair"));
        assert_eq!(shapenet_name("12345678"), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn orientation_turns_files_into_ours() {
        let axis = |s: &str| s.parse::<Axis>().unwrap();
        assert_eq!((axis("y"), axis("+Z"), axis("-x").to_string()), (Axis::UP, Axis::FRONT, "-x".to_string()));
        assert!("w".parse::<Axis>().unwrap_err().contains("+x, -x"));
        // A point on the file's up axis goes to +y, on its front axis to +z, and handedness is kept.
        let m = |v: [f32; 3]| Mesh { vertices: vec![v], triangles: vec![] };
        let turn = |v, up: &str, front: &str| m(v).oriented(axis(up), axis(front)).unwrap().vertices[0];
        assert_eq!(turn([1.0, 2.0, 3.0], "+y", "+z"), [1.0, 2.0, 3.0]);
        // ShapeNet v2: front -z, so the camera at azimuth 0 sees the front.
        assert_eq!(turn([0.0, 0.0, -1.0], "+y", "-z"), [0.0, 0.0, 1.0]);
        assert_eq!(turn([1.0, 0.0, 0.0], "+y", "-z"), [-1.0, 0.0, 0.0]);
        // Z up (CAD files), front -y.
        assert_eq!(turn([0.0, 0.0, 1.0], "+z", "-y"), [0.0, 1.0, 0.0]);
        assert_eq!(turn([0.0, -1.0, 0.0], "+z", "-y"), [0.0, 0.0, 1.0]);
        assert_eq!(turn([1.0, 0.0, 0.0], "+z", "-y"), [1.0, 0.0, 0.0]);
        let err = m([0.0; 3]).oriented(axis("+y"), axis("-y")).unwrap_err().to_string();
        assert!(err.contains("different axes"), "{err}");
    }
}
