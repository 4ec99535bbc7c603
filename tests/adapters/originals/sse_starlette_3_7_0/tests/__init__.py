# Tests package
