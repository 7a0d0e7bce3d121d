//! Storage of key versions for one timeline (built by the pageserver issue).
