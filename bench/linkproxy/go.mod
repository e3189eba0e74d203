module cairn.dev/bench/linkproxy

go 1.19
