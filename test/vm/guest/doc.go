// Package guest holds the tests that run inside the qemu guest (build tag
// vmguest); see package vm.
package guest
