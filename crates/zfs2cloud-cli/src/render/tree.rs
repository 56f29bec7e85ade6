//! Chains drawn as trees: each backup under the one it is based on.

/// Orders items as a forest and gives each the prefix that draws it:
/// `parents[i]` is the index of the item `i` hangs under, or `None` for a
/// root (a full, or an item whose parent is not shown). Roots and the
/// children of each item keep their order in `parents`. A parent index
/// that is out of range, or that would close a loop, makes a root.
#[must_use]
pub fn forest(parents: &[Option<usize>]) -> Vec<(usize, String)> {
    let parent_of = |i: usize| parents[i].filter(|&p| p < parents.len() && !loops(parents, i));
    let children = |of: Option<usize>| -> Vec<usize> {
        (0..parents.len()).filter(|&i| parent_of(i) == of).collect()
    };
    let mut out = Vec::with_capacity(parents.len());
    // Depth first, with the prefix of the lines above each child.
    let mut stack: Vec<(usize, String, bool, bool)> = children(None)
        .into_iter()
        .rev()
        .map(|i| (i, String::new(), true, true))
        .collect();
    while let Some((i, indent, last, root)) = stack.pop() {
        let branch = match (root, last) {
            (true, _) => "",
            (false, true) => "└─ ",
            (false, false) => "├─ ",
        };
        out.push((i, format!("{indent}{branch}")));
        let below = match (root, last) {
            (true, _) => indent.clone(),
            (false, true) => format!("{indent}   "),
            (false, false) => format!("{indent}│  "),
        };
        let kids = children(Some(i));
        let n = kids.len();
        for (k, child) in kids.into_iter().enumerate().rev() {
            stack.push((child, below.clone(), k + 1 == n, false));
        }
    }
    out
}

/// Whether following parents from `i` comes back to `i`.
fn loops(parents: &[Option<usize>], i: usize) -> bool {
    let mut at = parents[i];
    for _ in 0..parents.len() {
        match at {
            Some(p) if p == i => return true,
            Some(p) if p < parents.len() => at = parents[p],
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawn(names: &[&str], parents: &[Option<usize>]) -> Vec<String> {
        forest(parents)
            .into_iter()
            .map(|(i, prefix)| format!("{prefix}{}", names[i]))
            .collect()
    }

    #[test]
    fn levels_draw_as_a_tree_of_three() {
        let names = ["full", "d1", "weekly", "d8", "d9", "full2"];
        let parents = [None, Some(0), Some(0), Some(2), Some(2), None];
        assert_eq!(
            drawn(&names, &parents),
            [
                "full",
                "├─ d1",
                "└─ weekly",
                "   ├─ d8",
                "   └─ d9",
                "full2"
            ]
        );
    }

    #[test]
    fn a_chain_nests_and_a_loop_or_a_stray_parent_is_a_root() {
        let names = ["a", "b", "c"];
        assert_eq!(
            drawn(&names, &[None, Some(0), Some(1)]),
            ["a", "└─ b", "   └─ c"]
        );
        assert_eq!(drawn(&names, &[Some(1), Some(0), Some(9)]), ["a", "b", "c"]);
    }
}
