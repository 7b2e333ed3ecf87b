package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process the suite owns: output appended to a log file,
// stopped at cleanup, and watched for exits the suite did not cause.
type Process struct {
	Name    string
	Path    string
	Args    []string
	Env     []string
	LogPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	expected bool     // the suite signalled it
	exits    []string // exits the suite did not cause
}

// NewProcess describes a process; Start runs it.
func NewProcess(tb testing.TB, name, path, logPath string, env []string, args ...string) *Process {
	p := &Process{Name: name, Path: path, Args: args, Env: env, LogPath: logPath}
	tb.Cleanup(func() { p.Kill() })
	return p
}

// Start runs the process (again, after a stop), appending to its log.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exitedLocked() {
		return fmt.Errorf("%s is running", p.Name)
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected = cmd, done, false
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if !p.expected {
			p.exits = append(p.exits, fmt.Sprintf("%s exited on its own at %s: %v", p.Name, time.Now().Format("15:04:05.000"), err))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Process) exitedLocked() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the running process's id (0 when it does not run).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process runs.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exitedLocked()
}

// Signal sends sig to the process and marks its exit as caused by the suite.
func (p *Process) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exitedLocked() {
		return
	}
	p.expected = true
	_ = p.cmd.Process.Signal(sig)
}

// Wait waits up to d for the process to exit; it reports whether it did, and
// its exit code.
func (p *Process) Wait(d time.Duration) (bool, int) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true, 0
	}
	select {
	case <-done:
		return true, cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return false, -1
	}
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. It returns the exit
// code (-1 when killed).
func (p *Process) Stop(grace time.Duration) int {
	p.Signal(syscall.SIGTERM)
	if ok, code := p.Wait(grace); ok {
		return code
	}
	p.Kill()
	return -1
}

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
}

// UnexpectedExits lists the exits the suite did not cause.
func (p *Process) UnexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exits...)
}

// baseEnv is the little of the suite's environment a child needs; everything
// else is set explicitly, so a developer's NATS_URL never leaks in.
func baseEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
