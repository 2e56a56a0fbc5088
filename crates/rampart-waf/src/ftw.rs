//! go-ftw test reader (filled in below).
