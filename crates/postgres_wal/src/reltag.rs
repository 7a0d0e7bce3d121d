//! Relation identifiers and fork numbers.

use std::fmt;

/// Object identifier.
pub type Oid = u32;

/// A block number inside one fork of a relation.
pub type BlockNumber = u32;

/// A relation's physical identity (`RelFileNode`): tablespace, database, relfilenode.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelFileNode {
    pub spc_node: Oid,
    pub db_node: Oid,
    pub rel_node: Oid,
}

impl fmt::Display for RelFileNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.spc_node, self.db_node, self.rel_node)
    }
}

/// The forks of a relation (`ForkNumber`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ForkNumber {
    Main = 0,
    Fsm = 1,
    VisibilityMap = 2,
    Init = 3,
}

impl ForkNumber {
    pub fn from_u8(n: u8) -> Option<ForkNumber> {
        match n {
            0 => Some(ForkNumber::Main),
            1 => Some(ForkNumber::Fsm),
            2 => Some(ForkNumber::VisibilityMap),
            3 => Some(ForkNumber::Init),
            _ => None,
        }
    }

    /// The name PostgreSQL uses in file names and in `pg_waldump` output.
    pub fn name(self) -> &'static str {
        match self {
            ForkNumber::Main => "main",
            ForkNumber::Fsm => "fsm",
            ForkNumber::VisibilityMap => "vm",
            ForkNumber::Init => "init",
        }
    }

    pub fn from_name(name: &str) -> Option<ForkNumber> {
        [
            ForkNumber::Main,
            ForkNumber::Fsm,
            ForkNumber::VisibilityMap,
            ForkNumber::Init,
        ]
        .into_iter()
        .find(|f| f.name() == name)
    }
}

/// One fork of one relation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelTag {
    pub node: RelFileNode,
    pub fork: ForkNumber,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_names_round_trip() {
        for n in 0..4 {
            let fork = ForkNumber::from_u8(n).unwrap();
            assert_eq!(fork as u8, n);
            assert_eq!(ForkNumber::from_name(fork.name()), Some(fork));
        }
        assert_eq!(ForkNumber::from_u8(4), None);
        assert_eq!(ForkNumber::from_name("data"), None);
    }
}
