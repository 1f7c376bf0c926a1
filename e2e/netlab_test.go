package e2e

// netLab: real network partitions for real processes. Each server runs in
// a network namespace of its own, plugged into a bridge that lives in one
// more namespace (the hub), which a veth pair links to the test's own
// namespace, where the reference, the broker and the test's clients run:
//
//	test ns: <prefix>h 10.213.K.1 ──veth── hub ns: br0 ──veth── server i ns: eth0 10.213.K.(10+i)
//
// The bridge is in a namespace of its own, not the test's, so the host's
// firewall (br_netfilter, Docker's FORWARD policy) never sees the
// servers' traffic. A cut is a table of nftables rules inside one
// server's namespace that drops its packets to and from the other
// servers and the reference's and broker's ports, but not those of the
// test's clients: the test still talks to the cut-off server directly,
// as a client on its side of the partition would. Healing deletes the
// table; the end of the test deletes the namespaces, and with them every
// interface and rule. Everything is named <prefix>…, prefix holding the
// test process's pid, and a lab left behind by a test process that died
// is removed by the next one.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const netLabPrefix = "ce2e"

// netLab is a set of namespaces made for one test.
type netLab struct {
	t      *testing.T
	prefix string   // every name starts with it
	hub    string   // the hub namespace
	hostIf string   // the test namespace's end of the veth to the hub
	hostIP string   // its address
	ns     []string // server i's namespace
	ips    []string // server i's address
}

// newNetLab makes a lab for n servers, or skips the test when this
// machine cannot (not root, no ip or nft, no namespaces).
func newNetLab(t *testing.T, n int) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network partitions need root (network namespaces and nftables); run the test as root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("network partitions need the %s tool: %v", tool, err)
		}
	}
	removeStaleNetLabs(t)
	l := &netLab{t: t, prefix: fmt.Sprintf("%s%d", netLabPrefix, os.Getpid())}
	l.hub, l.hostIf = l.prefix+"-hub", l.prefix+"h"
	if _, err := netCmd("ip", "netns", "list"); err != nil {
		t.Skipf("network namespaces unusable here: %v", err)
	}
	subnet, err := freeSubnet()
	if err != nil {
		t.Skip(err)
	}
	l.hostIP = subnet + ".1"
	t.Cleanup(l.destroy)
	steps := [][]string{
		{"ip", "netns", "add", l.hub},
		{"ip", "-n", l.hub, "link", "set", "lo", "up"},
		{"ip", "-n", l.hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.hub, "link", "set", "br0", "up"},
		{"ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", "up0", "netns", l.hub},
		{"ip", "addr", "add", l.hostIP + "/24", "dev", l.hostIf},
		{"ip", "link", "set", l.hostIf, "up"},
		{"ip", "-n", l.hub, "link", "set", "up0", "master", "br0", "up"},
	}
	for i := range n {
		ns, ip := fmt.Sprintf("%s-s%d", l.prefix, i+1), fmt.Sprintf("%s.%d", subnet, 11+i)
		port := fmt.Sprintf("s%d", i+1)
		l.ns, l.ips = append(l.ns, ns), append(l.ips, ip)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", l.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", l.hub, "link", "set", port, "master", "br0", "up"},
			[]string{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if _, err := netCmd(s...); err != nil {
			t.Skipf("cannot build the network namespaces for the partition (%v); the test needs root with CAP_NET_ADMIN, veth and bridge support", err)
		}
	}
	// nftables must work inside a namespace, or cuts cannot be made.
	if _, err := netCmd(append(l.exec(0), "nft", "list", "tables")...); err != nil {
		t.Skipf("nftables unusable inside a network namespace: %v", err)
	}
	return l
}

// exec is the command prefix that runs a command in server i's namespace.
func (l *netLab) exec(i int) []string { return []string{"ip", "netns", "exec", l.ns[i]} }

// cut drops every packet between server i and the other servers, and
// between server i and the given ports of the host (the reference's and
// the broker's); the test's own clients still reach it.
func (l *netLab) cut(i int, hostPorts []string) {
	l.t.Helper()
	var others []string
	for j, ip := range l.ips {
		if j != i {
			others = append(others, ip)
		}
	}
	peers, ports := strings.Join(others, ", "), strings.Join(hostPorts, ", ")
	rules := fmt.Sprintf(`table inet chatcut {
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr { %[1]s } drop
		ip saddr %[2]s tcp sport { %[3]s } drop
	}
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr { %[1]s } drop
		ip daddr %[2]s tcp dport { %[3]s } drop
	}
}
`, peers, l.hostIP, ports)
	cmd := exec.Command("ip", append(l.exec(i)[1:], "nft", "-f", "-")...)
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("cut server %d off: %v\n%s\n%s", i+1, err, out, rules)
	}
}

// heal removes the cut of server i.
func (l *netLab) heal(i int) {
	l.t.Helper()
	if _, err := netCmd(append(l.exec(i), "nft", "delete", "table", "inet", "chatcut")...); err != nil {
		l.t.Fatalf("heal server %d: %v", i+1, err)
	}
}

// destroy deletes the lab's namespaces (the processes in them were
// stopped before: t.Cleanup runs the cluster's cleanup first).
func (l *netLab) destroy() {
	for _, ns := range append(l.ns, l.hub) {
		killNamespace(ns)
	}
	netCmd("ip", "link", "del", l.hostIf) // gone with the hub already, normally
}

// killNamespace kills whatever still runs in a namespace and deletes it.
func killNamespace(ns string) {
	if out, err := netCmd("ip", "netns", "pids", ns); err == nil {
		for f := range strings.FieldsSeq(out) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	netCmd("ip", "netns", "del", ns)
}

// removeStaleNetLabs deletes the namespaces of labs whose test process
// is gone (it was killed before its cleanup ran).
func removeStaleNetLabs(t *testing.T) {
	out, err := netCmd("ip", "netns", "list")
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^` + netLabPrefix + `(\d+)-\S+`)
	for line := range strings.Lines(out) {
		m := re.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // ours, or its test still runs
		}
		t.Logf("removing the namespace %s left by test process %d", m[0], pid)
		killNamespace(m[0])
	}
}

// freeSubnet picks a 10.213.K.0/24 that no address or route of this
// machine touches (a default route aside).
func freeSubnet() (string, error) {
	addrs, err := netCmd("ip", "-4", "-o", "addr", "show")
	if err != nil {
		return "", err
	}
	routes, err := netCmd("ip", "-4", "route", "show", "table", "all")
	if err != nil {
		return "", err
	}
	var used []netip.Prefix
	for _, f := range strings.Fields(addrs + " " + routes) {
		if p, err := netip.ParsePrefix(f); err == nil {
			used = append(used, p.Masked())
		} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
			used = append(used, netip.PrefixFrom(a, 32))
		}
	}
	start := os.Getpid() % 200
	for k := range 200 {
		third := 20 + (start+k)%200
		cand := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", third))
		clash := false
		for _, p := range used {
			if p.Bits() > 0 && p.Overlaps(cand) {
				clash = true
				break
			}
		}
		if !clash {
			return fmt.Sprintf("10.213.%d", third), nil
		}
	}
	return "", fmt.Errorf("no free 10.213.K.0/24 subnet for the test's namespaces")
}

// netCmd runs a command (10 s at most) and returns its output.
func netCmd(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
