package supervisor

import (
	"errors"
	"syscall"
)

func KillGroup(int, syscall.Signal) error {
	return errors.New("hottopic dev runs on Linux and macOS")
}

func SysProcAttr() *syscall.SysProcAttr { return nil }
