package fastpath

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -tags linux -go-package fastpath -output-stem forward forward bpf/forward.c -- -I/usr/include/x86_64-linux-gnu
