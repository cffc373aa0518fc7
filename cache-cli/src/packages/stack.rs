//! The layer budget: which package goes in which dependency layer.
//! Registries, containerd and overlayfs break near 125 layers and many
//! tiny layers pull slowly, so the stack is bounded: while the budget
//! allows, every package has a layer of its own; past it, the largest
//! packages keep their own layers and the rest fall into a fixed number of
//! groups by a hash of their name, so that adding or bumping one package
//! changes one group, never the membership of the others.

use super::plan::Package;

/// The most layers an image of package layers has by default, the `from`
/// image's own and the glue layer included.
pub const DEFAULT_MAX_LAYERS: usize = 100;

/// One dependency layer: the packages it holds (indexes into the plan, in
/// install order) and what it is called in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackLayer {
    /// Indexes into the plan's packages, ascending.
    pub packages: Vec<usize>,
    /// The package's name, or `group-N` for a group.
    pub name: String,
}

/// A size class: packages within a factor of two of each other rank as
/// one, so a bump that grows a package a little moves nothing.
fn size_class(bytes: Option<u64>) -> u32 {
    bytes.map_or(0, |bytes| u64::BITS - bytes.leading_zeros())
}

/// The group of a package that has no layer of its own.
fn group_of(name: &str, groups: usize) -> usize {
    let hash = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % groups as u64) as usize
}

/// What earlier builds recorded of a package.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hint {
    /// Its installed bytes.
    pub bytes: Option<u64>,
    /// How many times its version changed in the builds remembered.
    pub changes: u32,
}

/// The dependency layers of `packages` for an image whose `from` image has
/// `from_layers` layers, at most `max_layers` layers in all (one of them
/// the glue). `hint` gives what earlier builds recorded of the package at
/// an index: past the budget, the packages that change most often, then
/// the largest, keep layers of their own. `None` when the `from` image
/// alone leaves no room.
pub fn plan_stack(
    packages: &[Package],
    hint: impl Fn(usize) -> Hint,
    from_layers: usize,
    max_layers: usize,
) -> Option<Vec<StackLayer>> {
    let room = max_layers
        .checked_sub(from_layers + 1)
        .filter(|room| *room > 0)?;
    if packages.len() <= room {
        return Some(
            packages
                .iter()
                .enumerate()
                .map(|(at, package)| StackLayer {
                    packages: vec![at],
                    name: package.name.clone(),
                })
                .collect(),
        );
    }
    // A quarter of the room for groups, the rest for the packages that
    // change most often (a bump then rebuilds a layer of one package, not a
    // group), then the largest.
    let groups = (room / 4).max(1);
    let own = room - groups;
    let mut ranked: Vec<usize> = (0..packages.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (hint_a, hint_b) = (hint(a), hint(b));
        // A few changes rank alike: one more bump moves nothing.
        hint_b
            .changes
            .min(3)
            .cmp(&hint_a.changes.min(3))
            .then_with(|| size_class(hint_b.bytes).cmp(&size_class(hint_a.bytes)))
            .then_with(|| packages[a].name.cmp(&packages[b].name))
    });
    let mut layers: Vec<StackLayer> = ranked[..own]
        .iter()
        .map(|&at| StackLayer {
            packages: vec![at],
            name: packages[at].name.clone(),
        })
        .collect();
    let mut grouped: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for &at in &ranked[own..] {
        grouped[group_of(&packages[at].name, groups)].push(at);
    }
    layers.extend(
        grouped
            .into_iter()
            .enumerate()
            .filter(|(_, members)| !members.is_empty())
            .map(|(group, mut members)| {
                members.sort_unstable();
                StackLayer {
                    packages: members,
                    name: format!("group-{group}"),
                }
            }),
    );
    // In install order of each layer's first package.
    layers.sort_by_key(|layer| layer.packages[0]);
    Some(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packages::plan::{Artifact, ArtifactHash, Tie};

    fn packages(count: usize, bumped: Option<usize>) -> Vec<Package> {
        (0..count)
            .map(|n| Package {
                name: format!("package-{n:03}"),
                version: if Some(n) == bumped {
                    "2.0".into()
                } else {
                    "1.0".into()
                },
                artifact: Artifact {
                    url: format!("https://files.example/package_{n:03}-1.0-py3-none-any.whl"),
                    hash: Some(ArtifactHash::Sha256(format!("{n:064x}"))),
                },
                direct: false,
                requested: true,
                tie: Tie::Interpreter,
                needs: Vec::new(),
            })
            .collect()
    }

    /// The stack of `plan` with [`size_of`]'s sizes.
    fn stack_of(plan: &[Package], from_layers: usize) -> Vec<StackLayer> {
        plan_stack(
            plan,
            |at| sized(size_of(&plan[at])),
            from_layers,
            DEFAULT_MAX_LAYERS,
        )
        .unwrap()
    }

    /// A hint of `bytes` only.
    fn sized(bytes: Option<u64>) -> Hint {
        Hint { bytes, changes: 0 }
    }

    /// Sizes spread over four orders of magnitude, as a real lock's are.
    fn size_of(package: &Package) -> Option<u64> {
        let n: u64 = package.name["package-".len()..].parse().ok()?;
        let bump = u64::from(package.version == "2.0") * 1000;
        Some(1000 * (1 + (n * 7919) % 10_000) + bump)
    }

    /// The layers (as member names and versions) of a stack.
    fn contents(plan: &[Package], stack: &[StackLayer]) -> Vec<Vec<(String, String)>> {
        stack
            .iter()
            .map(|layer| {
                layer
                    .packages
                    .iter()
                    .map(|&at| (plan[at].name.clone(), plan[at].version.clone()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_small_plan_gets_a_layer_per_package() {
        let plan = packages(20, None);
        let stack = stack_of(&plan, 3);
        assert_eq!(stack.len(), 20);
        assert!(stack.iter().all(|layer| layer.packages.len() == 1));
        assert_eq!(stack[0].name, "package-000");
    }

    #[test]
    fn three_hundred_packages_fit_in_a_hundred_layers_and_a_bump_changes_at_most_two() {
        let from_layers = 3;
        let plan = packages(300, None);
        let stack = stack_of(&plan, from_layers);
        assert!(
            from_layers + stack.len() < DEFAULT_MAX_LAYERS,
            "{}",
            stack.len()
        );
        let covered: usize = stack.iter().map(|layer| layer.packages.len()).sum();
        assert_eq!(covered, 300);
        let before = contents(&plan, &stack);
        for bumped in [0, 17, 150, 299] {
            let plan = packages(300, Some(bumped));
            let stack = stack_of(&plan, from_layers);
            let after = contents(&plan, &stack);
            let changed = after.iter().filter(|layer| !before.contains(layer)).count();
            assert!(changed <= 2, "bumping {bumped} changed {changed} layers");
            assert!(changed >= 1);
        }
        // Adding a package changes one group or adds one layer.
        let mut grown = packages(300, None);
        grown.push(Package {
            name: "newcomer".into(),
            ..grown[0].clone()
        });
        let stack = stack_of(&grown, from_layers);
        let after = contents(&grown, &stack);
        let changed = after.iter().filter(|layer| !before.contains(layer)).count();
        assert!(changed <= 2, "adding one package changed {changed} layers");
    }

    #[test]
    fn past_the_budget_the_largest_packages_keep_layers_of_their_own() {
        let plan = packages(300, None);
        // The last by name, and by far the largest.
        let huge = 299;
        let size = |at: usize| sized(Some(if at == huge { 1 << 30 } else { 1000 }));
        let stack = plan_stack(&plan, size, 3, DEFAULT_MAX_LAYERS).unwrap();
        assert!(
            stack.iter().any(|layer| layer.packages == [huge]),
            "the largest package shares a layer"
        );
        // Without sizes it would have been grouped (own layers go by name).
        let stack = plan_stack(&plan, |_| Hint::default(), 3, DEFAULT_MAX_LAYERS).unwrap();
        assert!(!stack.iter().any(|layer| layer.packages == [huge]));
    }

    #[test]
    fn past_the_budget_a_package_that_changes_often_keeps_a_layer_of_its_own() {
        let plan = packages(300, None);
        // Small, last by name, but bumped in every build remembered.
        let busy = 298;
        let hint = |at: usize| Hint {
            bytes: Some(if at == busy { 10 } else { 1 << 20 }),
            changes: u32::from(at == busy) * 5,
        };
        let stack = plan_stack(&plan, hint, 3, DEFAULT_MAX_LAYERS).unwrap();
        assert!(stack.iter().any(|layer| layer.packages == [busy]));
    }

    #[test]
    fn a_from_image_that_fills_the_budget_leaves_no_room() {
        assert_eq!(
            plan_stack(&packages(5, None), |_| Hint::default(), 99, 100),
            None
        );
        assert!(plan_stack(&packages(5, None), |_| Hint::default(), 98, 100).is_some());
    }
}
