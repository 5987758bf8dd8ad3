package supervisor

import (
	"errors"
	"syscall"
)

func killGroup(int, syscall.Signal) error {
	return errors.New("hottopic dev runs on Linux and macOS")
}

func sysProcAttr() *syscall.SysProcAttr { return nil }
