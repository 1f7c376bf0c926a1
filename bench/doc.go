// Package bench holds the system's benchmarks. Figures are always reported
// next to a baseline measured in the same run (a bare echo server on the
// same transport), because the machine is shared and noisy: compare the
// ratios, not the absolute numbers.
//
//	go test -run=^$ -bench=. -benchtime=1x ./bench
package bench
