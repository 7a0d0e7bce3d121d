//! Basebackup and import (built by the pageserver issue).
