module sidecarkit/bench/openloop

go 1.22
