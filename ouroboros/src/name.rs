//! Name management through `libouroboros-irm`: what a program needs to be
//! reachable without the user typing `irm` commands.

use crate::error::{Error, Result};
use crate::ffi;
use crate::flow::{bound_names, c_name};

/// An IPCP as listed by the IRMd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcpInfo {
    /// Process id of the IPCP.
    pub pid: i32,
    /// IPCP type as the C enum (`0` local, `1` unicast, `2` broadcast,
    /// `3` eth-llc, `4` eth-dix, `5` udp4, `6` udp6 in 0.23).
    pub ipcp_type: i32,
    /// IPCP name.
    pub name: String,
    /// Layer the IPCP is in (empty before bootstrap/enrolment).
    pub layer: String,
}

fn irm_check(op: &'static str, r: i32) -> Result<()> {
    if r < 0 {
        Err(Error::from_ret(op, r.into()))
    } else {
        Ok(())
    }
}

/// Lists the IPCPs known to the IRMd.
pub fn list_ipcps() -> Result<Vec<IpcpInfo>> {
    let lib = ffi::lib()?;
    let v = lib
        .list_ipcps()?
        .map_err(|r| Error::from_ret("irm_list_ipcps", r.into()))?;
    Ok(v.into_iter()
        .map(|(pid, ipcp_type, name, layer)| IpcpInfo {
            pid,
            ipcp_type,
            name,
            layer,
        })
        .collect())
}

/// Lists the names known to the IRMd.
pub fn list_names() -> Result<Vec<String>> {
    let lib = ffi::lib()?;
    lib.list_names()?
        .map_err(|r| Error::from_ret("irm_list_names", r.into()))
}

/// Creates `name` in the IRMd with the default security paths (see
/// `docs/ouroboros.md` for encryption and authentication).
pub fn create_name(name: &str) -> Result<()> {
    c_name(name)?;
    let lib = ffi::lib()?;
    irm_check("irm_create_name", lib.create_name(name)?)
}

/// Destroys `name` in the IRMd.
pub fn destroy_name(name: &str) -> Result<()> {
    let c = c_name(name)?;
    let lib = ffi::lib()?;
    irm_check("irm_destroy_name", lib.destroy_name(&c)?)
}

fn layer_ipcps(layer: &str) -> Result<Vec<i32>> {
    let pids: Vec<i32> = list_ipcps()?
        .into_iter()
        .filter(|i| i.layer == layer)
        .map(|i| i.pid)
        .collect();
    if pids.is_empty() {
        return Err(Error::NoSuchLayer(layer.to_owned()));
    }
    Ok(pids)
}

/// Registers `name` in `layer` (with every IPCP of that layer).
pub fn register_name(name: &str, layer: &str) -> Result<()> {
    let c = c_name(name)?;
    let lib = ffi::lib()?;
    for pid in layer_ipcps(layer)? {
        irm_check("irm_reg_name", lib.reg_name(&c, pid, true)?)?;
    }
    Ok(())
}

/// Unregisters `name` from `layer`.
pub fn unregister_name(name: &str, layer: &str) -> Result<()> {
    let c = c_name(name)?;
    let lib = ffi::lib()?;
    for pid in layer_ipcps(layer)? {
        irm_check("irm_unreg_name", lib.reg_name(&c, pid, false)?)?;
    }
    Ok(())
}

/// Binds the current process to `name`: flows allocated to the name are
/// offered to [`flow_accept`](crate::flow_accept) here.
pub fn bind_process(name: &str) -> Result<()> {
    let c = c_name(name)?;
    let lib = ffi::lib()?;
    irm_check(
        "irm_bind_process",
        lib.bind_process(std::process::id() as i32, &c, true)?,
    )?;
    *bound_names().entry(name.to_owned()).or_insert(0) += 1;
    Ok(())
}

/// Unbinds the current process from `name`.
pub fn unbind_process(name: &str) -> Result<()> {
    let c = c_name(name)?;
    let lib = ffi::lib()?;
    {
        let mut b = bound_names();
        if let Some(n) = b.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                b.remove(name);
            }
        }
    }
    irm_check(
        "irm_unbind_process",
        lib.bind_process(std::process::id() as i32, &c, false)?,
    )
}

/// A name this process is reachable at: created in the IRMd if it did not
/// exist, registered in some layers and bound to this process. Dropping it
/// undoes what it did (unbind, unregister, and destroy the name if it
/// created it).
///
/// ```no_run
/// use cicada_ouroboros::{flow_accept, Name};
///
/// # fn main() -> Result<(), cicada_ouroboros::Error> {
/// let _name = Name::bind("my_service", &["local_layer"])?;
/// let flow = flow_accept(None)?;
/// flow.write(b"hello")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Name {
    name: String,
    created: bool,
    layers: Vec<String>,
    bound: bool,
}

impl Name {
    /// Creates (if needed), registers in `layers` and binds `name`.
    pub fn bind(name: &str, layers: &[&str]) -> Result<Name> {
        c_name(name)?;
        let mut n = Name {
            name: name.to_owned(),
            created: false,
            layers: Vec::new(),
            bound: false,
        };
        if !list_names()?.iter().any(|x| x == name) {
            create_name(name)?;
            n.created = true;
        }
        for l in layers {
            register_name(name, l)?;
            n.layers.push((*l).to_owned());
        }
        bind_process(name)?;
        n.bound = true;
        Ok(n)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layers the name was registered in.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        if self.bound {
            if let Err(e) = unbind_process(&self.name) {
                tracing::debug!("unbind {}: {e}", self.name);
            }
        }
        for l in &self.layers {
            if let Err(e) = unregister_name(&self.name, l) {
                tracing::debug!("unregister {} from {l}: {e}", self.name);
            }
        }
        if self.created {
            if let Err(e) = destroy_name(&self.name) {
                tracing::debug!("destroy name {}: {e}", self.name);
            }
        }
    }
}
